"""benchmarks/gan_reference.py without NVIDIA's repo: the CPU patches applied to a fake checkout whose
patched lines are verbatim from NVlabs/stylegan3 c233a91 (then imported and run on the CPU), the
errors for a changed checkout, the stats.jsonl reader, the dataset writer and the setting comparison."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

# Verbatim lines of NVlabs/stylegan3 c233a91 (indentation included) wrapped in just enough code to run.
FAKE_CHECKOUT = {
    "train.py": """import click
import torch
import types
dnnlib = types.SimpleNamespace(EasyDict=types.SimpleNamespace)

@click.command()
@click.option('--kimg',         help='Total training duration', metavar='KIMG',                 type=click.IntRange(min=1), default=25000, show_default=True)
@click.option('--tick',         help='How often to print progress', metavar='KIMG',             type=click.IntRange(min=1), default=4, show_default=True)
def main(**kwargs):
    c = dnnlib.EasyDict()
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, prefetch_factor=2)
    return kwargs, c
""",
    "training/training_loop.py": """import numpy as np
import torch

def training_loop(rank, phases, all_gen_c, report0):
    device = torch.device('cuda', rank)
    for phase in phases:
        phase.start_event = None
        phase.end_event = None
        if rank == 0:
            phase.start_event = torch.cuda.Event(enable_timing=True)
            phase.end_event = torch.cuda.Event(enable_timing=True)
    while True:
        all_gen_c = torch.from_numpy(np.stack(all_gen_c)).pin_memory().to(device)
        fields = []
        fields += [f"gpumem {report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(device) / 2**30):<6.2f}"]
        fields += [f"reserved {report0('Resources/peak_gpu_mem_reserved_gb', torch.cuda.max_memory_reserved(device) / 2**30):<6.2f}"]
        torch.cuda.reset_peak_memory_stats()
        return device, all_gen_c, fields
""",
    "torch_utils/misc.py": """import torch

class InfiniteSampler(torch.utils.data.Sampler):
    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5):
        assert len(dataset) > 0
        super().__init__(dataset)
        self.dataset = dataset
        self.rank = rank
""",
    "torch_utils/ops/conv2d_gradfix.py": """import torch
from pkg_resources import parse_version
_use_pytorch_1_11_api = parse_version(torch.__version__) >= parse_version('1.11.0a') # Allow prerelease builds of 1.11
""",
    "torch_utils/ops/grid_sample_gradfix.py": """import torch
from pkg_resources import parse_version
_use_pytorch_1_12_api = parse_version(torch.__version__) >= parse_version('1.12.0a') # Allow prerelease builds of 1.12
""",
    "dnnlib/util.py": """import uuid

from distutils.util import strtobool
from typing import Any, List, Tuple, Union
""",
}


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref() -> types.ModuleType:
    return _load(ROOT / "benchmarks" / "gan_reference.py", "gan_reference_under_test")


def _fake_checkout(root: Path) -> Path:
    for rel, text in FAKE_CHECKOUT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def test_patched_copy_runs_on_the_cpu_and_leaves_the_checkout_untouched(ref, tmp_path):
    repo = _fake_checkout(tmp_path / "stylegan3")
    forced = [dataclasses.replace(p, needed=lambda: True) for p in ref.PATCHES]
    applied = ref.copy_and_patch(repo, tmp_path / "copy", forced)
    assert len(applied) == len(ref.PATCHES)
    assert all((repo / rel).read_text() == text for rel, text in FAKE_CHECKOUT.items())
    copy = tmp_path / "copy"
    assert not (copy / ".git").exists()

    kwargs, c = _load(copy / "train.py", "fake_train").main(["--kimg=0.784", "--tick=0.256"], standalone_mode=False)
    assert kwargs == {"kimg": 0.784, "tick": 0.256}
    import torch

    assert c.data_loader_kwargs.pin_memory == torch.cuda.is_available()

    loop = _load(copy / "training" / "training_loop.py", "fake_loop")
    phase = types.SimpleNamespace()
    device, gen_c, fields = loop.training_loop(0, [phase], [np.zeros(2, np.float32)], lambda name, v: v)
    if not torch.cuda.is_available():  # what the patches are for: the unpatched loop fails here
        with pytest.raises(RuntimeError):
            _load(repo / "training" / "training_loop.py", "fake_loop_unpatched").training_loop(
                0, [types.SimpleNamespace()], [np.zeros(2, np.float32)], lambda name, v: v)
        assert device.type == "cpu" and phase.start_event is None
        assert fields == ["gpumem 0.00  ", "reserved 0.00  "]
    assert gen_c.device == device and gen_c.shape == (1, 2)

    if ref._sampler_takes_no_data_source():
        with pytest.raises(TypeError):
            _load(repo / "torch_utils" / "misc.py", "fake_misc_unpatched").InfiniteSampler([1, 2, 3])
    sampler = _load(copy / "torch_utils" / "misc.py", "fake_misc").InfiniteSampler([1, 2, 3])
    assert sampler.dataset == [1, 2, 3]
    assert _load(copy / "torch_utils" / "ops" / "conv2d_gradfix.py", "fake_c2g")._use_pytorch_1_11_api is True
    assert _load(copy / "torch_utils" / "ops" / "grid_sample_gradfix.py", "fake_gsg")._use_pytorch_1_12_api is True
    strtobool = _load(copy / "dnnlib" / "util.py", "fake_util").strtobool
    assert (strtobool("Yes"), strtobool("off")) == (1, 0)
    with pytest.raises(ValueError, match="maybe"):
        strtobool("maybe")


def test_changed_checkout_is_an_error_naming_the_file(ref, tmp_path):
    repo = _fake_checkout(tmp_path / "stylegan3")
    loop = repo / "training" / "training_loop.py"
    loop.write_text(loop.read_text().replace("torch.device('cuda', rank)", "torch.device(f'cuda:{rank}')"))
    with pytest.raises(ref.ReferenceRunError, match=r"training_loop\.py: expected the text .* found it 0 times"):
        ref.copy_and_patch(repo, tmp_path / "copy")
    with pytest.raises(ref.ReferenceRunError, match=r"no train\.py; pass a checkout of https://github.com/NVlabs"):
        ref.copy_and_patch(tmp_path / "empty", tmp_path / "copy2")


def _stats(path: Path, nimg_and_seconds: list[tuple[int, float]]) -> Path:
    lines = [json.dumps({"Progress/kimg": {"mean": n / 1000}, "Timing/sec_per_tick": {"mean": s}})
             for n, s in nimg_and_seconds]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_timed_sec_per_kimg_reads_only_the_ticks_after_warm_up(ref, tmp_path):
    stats = _stats(tmp_path / "stats.jsonl", [(16, 99.0), (272, 50.0), (528, 20.0), (784, 30.0)])
    assert ref.timed_sec_per_kimg(stats, batch=16, warmup=16, steps=32) == pytest.approx(50.0 / 512 * 1000)
    short = _stats(tmp_path / "short.jsonl", [(16, 1.0), (272, 1.0), (528, 1.0)])
    with pytest.raises(ref.ReferenceRunError, match="ticks end at 528 images, expected 784"):
        ref.timed_sec_per_kimg(short, batch=16, warmup=16, steps=32)


def test_dataset_in_dataset_tool_layout_and_fractional_command(ref, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    folder = ref.write_dataset(images, tmp_path / "data")
    assert json.loads((folder / "dataset.json").read_text()) == {"labels": None}
    back = np.asarray(Image.open(folder / "00000" / "img00000002.png")).transpose(2, 0, 1)
    assert np.array_equal(back, images[2])
    setting = dict(batch=16, r1_gamma=0.0128, channel_base=32768, channel_max=128, mapping_layers=2, mbstd_group=4,
                   ada_target=0.6, lr_g=0.002, lr_d=0.002, seed=0, r1_interval=16, pl_interval=4, ada=True)
    cmd = ref.train_command(tmp_path, folder, tmp_path / "run", setting, warmup=16, steps=32)
    assert {"--cfg=stylegan2", "--kimg=0.784", "--tick=0.256", "--gamma=0.0128", "--map-depth=2"} <= set(cmd)


def test_compare_flags_each_difference(ref):
    rows = ref.compare({"batch": 16, "augment": "xflip+hue", "pl_weight": 0.0},
                       {"batch": 16, "augment": "hue+xflip", "pl_weight": 2})
    assert [(key, same) for key, _, _, same in rows] == [("batch", True), ("augment", True), ("pl_weight", False)]
