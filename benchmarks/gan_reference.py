"""NVIDIA's own StyleGAN2 training (NVlabs/stylegan3 ``train.py --cfg=stylegan2``) timed on this machine.

Used by ``python benchmarks/gan_train.py --reference PATH_TO_STYLEGAN3_CHECKOUT``, which alternates it
with acneops' training step (ours, theirs, ours, theirs) and prints both sec/kimg and their ratio.

The checkout is never written: it is copied (without ``.git``) to a temporary folder and the copy gets
the minimal patches below, each of which must match its text exactly once (otherwise the run stops and
names the file, so a changed upstream file is never mis-patched silently). Nothing is downloaded or
executed from the network: ``--metrics=none``, no ``--resume``. Written against NVlabs/stylegan3 commit
c233a91 ("Fix custom ops bug for pytorch 1.12 and onwards").

Patches (always applied; they change nothing when CUDA is present):
1. ``training/training_loop.py``: device ``cuda:<rank>`` -> ``cpu`` when ``torch.cuda.is_available()``
   is false (the subprocess gets ``CUDA_VISIBLE_DEVICES=''`` when acneops runs on the CPU).
2. ``training/training_loop.py``: the per-phase ``torch.cuda.Event`` timers, the ``gpumem``/``reserved``
   fields and ``torch.cuda.reset_peak_memory_stats()`` only on CUDA (they fail without a GPU).
3. ``pin_memory``: train.py's DataLoader ``pin_memory=True`` and the loop's ``.pin_memory()`` of the
   generated labels only with CUDA (pinning needs an accelerator).
4. ``train.py``: ``--kimg`` and ``--tick`` accept fractions (``click.IntRange`` -> ``click.FloatRange``),
   so a run is a few hundred images in ticks of exactly one R1 interval (16 minibatches).
Patches applied only when this environment needs them (the run prints which were applied):
5. ``torch_utils/misc.py``: ``InfiniteSampler`` calls ``super().__init__(dataset)``; torch 2's
   ``Sampler.__init__`` no longer takes ``data_source`` -> ``super().__init__()``.
6. ``torch_utils/ops/conv2d_gradfix.py``, ``grid_sample_gradfix.py``: ``from pkg_resources import
   parse_version`` -> ``packaging.version.parse`` when setuptools' ``pkg_resources`` is missing.
7. ``dnnlib/util.py``: ``distutils.util.strtobool`` -> an equivalent local function when ``distutils``
   is missing (Python >= 3.12).
Not patched, because not needed: the custom CUDA ops (``bias_act``, ``upfirdn2d``, ``filtered_lrelu``)
already fall back to their reference implementations for CPU tensors, ``conv2d_gradfix`` disables itself
on torch >= 1.11 and on the CPU, and fp16 layers run in fp32 for CPU tensors (``force_fp32``).

Timing: NVIDIA's own per-tick ``Timing/sec_per_tick`` from its ``stats.jsonl`` (tick time excludes its
maintenance: snapshots, stats). Tick 0 is one minibatch, the next ``warmup`` images' ticks are warm-up,
the last ``steps`` minibatches are timed. Data: the same uint8 images acneops trains on, written as a
folder of PNGs + ``dataset.json`` (the format of NVIDIA's dataset_tool); one DataLoader worker.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image


class ReferenceRunError(RuntimeError):
    """NVIDIA's reference could not be prepared or run; the message names the file and the fix."""


def _sampler_takes_no_data_source() -> bool:
    import torch

    try:
        torch.utils.data.Sampler([0])
    except TypeError:
        return True
    return False


def _missing(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is None


@dataclasses.dataclass(frozen=True)
class Patch:
    path: str  # file inside the checkout
    old: str  # exact text; must occur exactly once
    new: str  # replacement
    why: str  # one line, printed when applied
    needed: Callable[[], bool] = lambda: True  # whether this environment needs the patch


_LOOP = "training/training_loop.py"
_STRTOBOOL = ("def strtobool(val):\n    val = val.lower()\n    if val in ('y', 'yes', 't', 'true', 'on', '1'):\n"
              "        return 1\n    if val in ('n', 'no', 'f', 'false', 'off', '0'):\n        return 0\n"
              "    raise ValueError(f'invalid truth value {val!r}')")
PATCHES: tuple[Patch, ...] = (
    Patch(_LOOP, "device = torch.device('cuda', rank)",
          "device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')",
          "device falls back to the CPU"),
    Patch(_LOOP, "        if rank == 0:\n            phase.start_event = torch.cuda.Event",
          "        if rank == 0 and device.type == 'cuda':\n            phase.start_event = torch.cuda.Event",
          "CUDA phase timers only on CUDA"),
    Patch(_LOOP, "torch.cuda.max_memory_allocated(device) / 2**30",
          "(torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0)",
          "gpumem field 0 on the CPU"),
    Patch(_LOOP, "torch.cuda.max_memory_reserved(device) / 2**30",
          "(torch.cuda.max_memory_reserved(device) / 2**30 if device.type == 'cuda' else 0)",
          "reserved field 0 on the CPU"),
    Patch(_LOOP, "        torch.cuda.reset_peak_memory_stats()\n",
          "        if device.type == 'cuda':\n            torch.cuda.reset_peak_memory_stats()\n",
          "reset_peak_memory_stats only on CUDA"),
    Patch(_LOOP, "torch.from_numpy(np.stack(all_gen_c)).pin_memory().to(device)",
          "(lambda t: t.pin_memory() if device.type == 'cuda' else t)"
          "(torch.from_numpy(np.stack(all_gen_c))).to(device)",
          "labels pinned only with CUDA"),
    Patch("train.py", "dnnlib.EasyDict(pin_memory=True, prefetch_factor=2)",
          "dnnlib.EasyDict(pin_memory=torch.cuda.is_available(), prefetch_factor=2)",
          "DataLoader pin_memory only with CUDA"),
    Patch("train.py", "help='Total training duration', metavar='KIMG',                 type=click.IntRange(min=1)",
          "help='Total training duration', metavar='KIMG',                 type=click.FloatRange(min=0)",
          "--kimg accepts fractions"),
    Patch("train.py", "help='How often to print progress', metavar='KIMG',             type=click.IntRange(min=1)",
          "help='How often to print progress', metavar='KIMG',             type=click.FloatRange(min=0)",
          "--tick accepts fractions"),
    Patch("torch_utils/misc.py", "        super().__init__(dataset)\n        self.dataset = dataset\n",
          "        super().__init__()\n        self.dataset = dataset\n",
          "InfiniteSampler: torch 2's Sampler.__init__ takes no data_source", _sampler_takes_no_data_source),
    Patch("torch_utils/ops/conv2d_gradfix.py", "from pkg_resources import parse_version",
          "from packaging.version import parse as parse_version",
          "conv2d_gradfix: packaging instead of the missing pkg_resources", _missing("pkg_resources")),
    Patch("torch_utils/ops/grid_sample_gradfix.py", "from pkg_resources import parse_version",
          "from packaging.version import parse as parse_version",
          "grid_sample_gradfix: packaging instead of the missing pkg_resources", _missing("pkg_resources")),
    Patch("dnnlib/util.py", "from distutils.util import strtobool", _STRTOBOOL,
          "dnnlib: local strtobool instead of the missing distutils", _missing("distutils")),
)


def copy_and_patch(repo: Path, dest: Path, patches: Sequence[Patch] = PATCHES) -> list[str]:
    """Copy the checkout ``repo`` to ``dest`` (without .git) and apply the needed ``patches`` to the copy.

    Returns the ``why`` of each applied patch. Raises ReferenceRunError naming the file when ``repo`` is
    not a stylegan3 checkout or a patch's text is not found exactly once.
    """
    repo, dest = Path(repo), Path(dest)
    for must in ("train.py", _LOOP):
        if not (repo / must).is_file():
            raise ReferenceRunError(f"--reference {repo}: no {must}; pass a checkout of "
                                  f"https://github.com/NVlabs/stylegan3 (git clone, or git archive of commit c233a91)")
    shutil.copytree(repo, dest, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    applied = []
    for patch in patches:
        if not patch.needed():
            continue
        path = dest / patch.path
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        found = text.count(patch.old)
        if found != 1:
            raise ReferenceRunError(
                f"{repo / patch.path}: expected the text {patch.old!r} exactly once, found it {found} times "
                f"(patch: {patch.why}); use NVlabs/stylegan3 commit c233a91 or update PATCHES in {__file__}")
        path.write_text(text.replace(patch.old, patch.new), encoding="utf-8")
        applied.append(f"{patch.path}: {patch.why}")
    return applied


def write_dataset(images: np.ndarray, folder: Path) -> Path:
    """uint8 (N, 3, R, R) images as NVIDIA's dataset_tool lays them out: 00000/img00000000.png + dataset.json."""
    folder = Path(folder)
    for i, image in enumerate(images):
        path = folder / f"{i // 1000:05d}" / f"img{i:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB").save(path)
    (folder / "dataset.json").write_text(json.dumps({"labels": None}), encoding="utf-8")
    return folder


def train_command(patched: Path, data: Path, out_dir: Path, s: dict, warmup: int, steps: int) -> list[str]:
    """NVIDIA's train.py command for ``s`` (acneops' setting): tick 0 = 1 minibatch, then ticks that
    each hold every phase (lcm of the R1 and path length intervals); ``warmup`` + ``steps`` minibatches
    after tick 0."""
    tick_kimg = math.lcm(s["r1_interval"], s["pl_interval"]) * s["batch"] / 1000
    total_kimg = (1 + warmup + steps) * s["batch"] / 1000
    return [sys.executable, str(patched / "train.py"), f"--outdir={out_dir}", "--cfg=stylegan2", f"--data={data}",
            "--gpus=1", f"--batch={s['batch']}", f"--gamma={s['r1_gamma']}", f"--cbase={s['channel_base']}",
            f"--cmax={s['channel_max']}", f"--map-depth={s['mapping_layers']}", f"--mbstd-group={s['mbstd_group']}",
            "--aug=ada" if s["ada"] else "--aug=noaug", f"--target={s['ada_target']}", f"--glr={s['lr_g']}",
            f"--dlr={s['lr_d']}", "--mirror=0",
            "--metrics=none", f"--kimg={total_kimg:g}", f"--tick={tick_kimg:g}", "--snap=100000",
            f"--seed={s['seed']}", "--workers=1"]


def timed_sec_per_kimg(stats_jsonl: Path, batch: int, warmup: int, steps: int) -> float:
    """sec/kimg of the last ``steps`` minibatches from NVIDIA's stats.jsonl (one record per tick)."""
    ticks = [json.loads(line) for line in Path(stats_jsonl).read_text(encoding="utf-8").splitlines() if line.strip()]
    kimg = [round(t["Progress/kimg"]["mean"] * 1000) for t in ticks]
    end, start = batch * (1 + warmup + steps), batch * (1 + warmup)
    if kimg[-1] != end:
        raise ReferenceRunError(f"{stats_jsonl}: ticks end at {kimg[-1]} images, expected {end}")
    first = next((i for i, n in enumerate(kimg) if n == start), None)
    if first is None:
        raise ReferenceRunError(f"{stats_jsonl}: no tick ends after warm-up at {start} images; ticks end at "
                                f"{kimg} (warm-up and steps must be multiples of the tick)")
    seconds = sum(t["Timing/sec_per_tick"]["mean"] for t in ticks[first + 1:])
    return seconds / (steps * batch) * 1000


def run_reference(patched: Path, data: Path, out_dir: Path, s: dict, warmup: int, steps: int,
                  threads: int, device: str) -> tuple[float, dict]:
    """Run NVIDIA's training once into a fresh ``out_dir``; (timed sec/kimg, its training_options.json)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    log = Path(out_dir).with_suffix(".log")
    cmd = train_command(patched, data, out_dir, s, warmup, steps)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, cwd=patched, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise ReferenceRunError(f"NVIDIA's train.py exited with {proc.returncode}; log {log}, last lines:\n{tail}")
    (run_dir,) = [p for p in Path(out_dir).iterdir() if p.is_dir()]
    options = json.loads((run_dir / "training_options.json").read_text(encoding="utf-8"))
    return timed_sec_per_kimg(run_dir / "stats.jsonl", s["batch"], warmup, steps), options


def machine() -> str:
    """CPU model (from /proc/cpuinfo), logical cores, cores this process may use, torch and Python versions."""
    import platform

    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}, {os.cpu_count()} logical cores ({usable} usable), torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def nvidia_setting(o: dict) -> dict:
    """The settings acneops' benchmark matches, read from NVIDIA's training_options.json; values absent
    from it are the defaults of NVIDIA's training_loop / networks_stylegan2 / StyleGAN2Loss (noted)."""
    G, D, loss = o["G_kwargs"], o["D_kwargs"], o["loss_kwargs"]
    aug = o.get("augment_kwargs") or {}
    return {
        "resolution": o["training_set_kwargs"]["resolution"], "batch": o["batch_size"], "z_dim": G["z_dim"],
        "w_dim": G["w_dim"], "mapping_layers": G["mapping_kwargs"]["num_layers"],
        "channel_base": G["channel_base"], "channel_max": G["channel_max"],
        "conv_clamp": G.get("conv_clamp", 256),  # networks_stylegan2 default for G and D
        "mbstd_group": D["epilogue_kwargs"]["mbstd_group_size"],
        "lr_g": o["G_opt_kwargs"]["lr"], "lr_d": o["D_opt_kwargs"]["lr"],
        "betas": tuple(o["G_opt_kwargs"]["betas"]), "r1_gamma": loss["r1_gamma"],
        "r1_interval": o.get("D_reg_interval", 16),  # training_loop default
        "pl_weight": loss.get("pl_weight", 0), "pl_interval": o.get("G_reg_interval"),
        "pl_batch_shrink": loss.get("pl_batch_shrink", 2), "pl_decay": loss.get("pl_decay", 0.01),
        "style_mixing": loss.get("style_mixing_prob", 0), "ema_kimg": o["ema_kimg"],
        "ema_rampup": o.get("ema_rampup", 0.05), "ada": bool(aug) and o.get("ada_target") is not None,
        "ada_target": o.get("ada_target"), "augment_p": o.get("augment_p", 0),
        "ada_interval": o.get("ada_interval", 4),
        "ada_kimg": o.get("ada_kimg", 500), "augment": "+".join(k for k, v in aug.items() if k != "class_name" and v),
        "xflip_dataset": o["training_set_kwargs"]["xflip"], "seed": o["random_seed"],
    }


def compare(ours: dict, theirs: dict) -> list[tuple[str, str, str, bool]]:
    """Rows (setting, ours, theirs, equal) for every key NVIDIA's setting has."""
    rows = []
    for key, value in theirs.items():
        mine = ours.get(key)
        same = (sorted(str(mine).split("+")) == sorted(str(value).split("+"))) if key == "augment" else mine == value
        rows.append((key, str(mine), str(value), bool(same)))
    return rows
