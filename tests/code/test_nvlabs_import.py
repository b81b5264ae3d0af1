"""`acneops gan import-nvlabs`: NVIDIA network pickles in, acneops GAN checkpoints out, nothing in the file executed.

The pickles are written as NVIDIA's training loop writes them (tests/code/nvlabs_fakes.py: persistent-class records
with the module tree of stylegan2-ada-pytorch's networks) around the reference network of
../shared/testdata/nvlabs_stylegan2_32px.npz (built with NVIDIA's code, see its README; ACNEOPS_TESTDATA_DIR
overrides the folder), so the imported checkpoint must reproduce NVIDIA's images and logits. Refused pickles plant
files that appear only if something in them runs.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from nvlabs_fakes import build_pickles
from typer.testing import CliRunner

from acneops.cli import app
from acneops.core.errors import AcneopsError
from acneops.gan import checkpoint
from acneops.gan import nvlabs_pickle
from acneops.gan.nvlabs_import import import_nvlabs, is_nvlabs_import

REPO = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("ACNEOPS_TESTDATA_DIR", REPO.parent / "shared" / "testdata"))
NPZ = TESTDATA / "nvlabs_stylegan2_32px.npz"
ATOL = 1e-4
# train_gan settings of the reference network (its .json): what a fine-tune of the import must use
REFERENCE_NET = {"resolution": 32, "z_dim": 512, "w_dim": 512, "mapping_layers": 2, "channel_base": 16384,
                 "channel_max": 64, "conv_clamp": 256, "mbstd_group": 4}


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> dict[str, Path]:
    """The NVIDIA-format pickles (built in a separate process) and the marker files a payload would create."""
    assert NPZ.is_file(), f"{NPZ} missing: the NVIDIA reference is required (set ACNEOPS_TESTDATA_DIR)"
    root = tmp_path_factory.mktemp("nvlabs")
    markers = {"exec": root / "exec_marker", "os": root / "os_marker"}
    env = {**os.environ, "ACNEOPS_EXEC_MARKER": str(markers["exec"]), "ACNEOPS_OS_MARKER": str(markers["os"])}
    out = build_pickles(NPZ, root, env)
    return {**{p.stem: p for p in out.glob("*.pkl")}, **{f"{k}_marker": v for k, v in markers.items()}}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    with np.load(NPZ) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


def _no_payload_ran(fakes: dict[str, Path]) -> None:
    assert not fakes["exec_marker"].exists(), "module_src was executed"
    assert not fakes["os_marker"].exists(), "os.system was executed"
    assert not {"torch_utils", "torch_utils.persistence", "dnnlib", "training.networks"} & set(sys.modules), \
        "NVIDIA's code (or its stand-in) was imported"


def _params(root: Path, **net) -> Path:
    """params.yaml with a train_gan run 'tuned' fine-tuning models/nvlabs/ffhq32.pt (the reference's settings)."""
    section = {**REFERENCE_NET, "batch": 4, "grid_seeds": 4, "workers": 1, "device": "cpu", **net,
               "restored_dir": str(root / "restored"),
               "runs": {"tuned": {"labels": ["healthy"], "resume_from": "models/nvlabs/ffhq32.pt"}}}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"train_gan": section}))
    return path


def _cli(*args: str):
    return CliRunner().invoke(app, ["gan", "import-nvlabs", *map(str, args)])


def test_cli_import_reproduces_nvidia_images_and_logits(tmp_path, monkeypatch, fakes, reference):
    monkeypatch.chdir(tmp_path)
    _params(tmp_path)
    result = _cli(fakes["ffhq32"], "models/nvlabs/ffhq32.pt")
    assert result.exit_code == 0, result.output
    assert "checked against params.yaml train_gan run 'tuned'" in result.output
    out = tmp_path / "models" / "nvlabs" / "ffhq32.pt"

    ckpt = checkpoint.load(out)  # the way train_gan (transfer) and generation read a GAN checkpoint
    G = checkpoint.build_generator(ckpt)
    _, D_cls = checkpoint.family_models(ckpt["family"])
    D = D_cls(**ckpt["model_args"]["D"]).eval()
    D.load_state_dict(ckpt["model"]["D"])
    ref = reference
    with torch.no_grad():
        torch.testing.assert_close(G(ref["z"], noise_mode="const"), ref["img"], atol=ATOL, rtol=0)
        torch.testing.assert_close(G(ref["z"], truncation_psi=0.7, noise_mode="const"), ref["img_psi0.7"],
                                   atol=ATOL, rtol=0)
        torch.testing.assert_close(D(ref["img"]), ref["D_logits_of_img"], atol=ATOL, rtol=0)
    for name, value in ckpt["model"]["G"].items():  # G is the pickle's G (its weights are half of G_ema's)
        if name.rsplit(".", 1)[-1] in ("weight", "bias", "const", "noise_strength"):  # parameters, not buffers
            assert torch.equal(value, 0.5 * ckpt["model"]["G_ema"][name]), name

    source = ckpt["source"]
    assert source["kind"] == "nvlabs" and source["pickle_name"] == "ffhq32.pkl" and source["G_from"] == "G"
    assert source["pickle_sha256"] == hashlib.sha256(fakes["ffhq32"].read_bytes()).hexdigest()
    assert source["init_kwargs"]["G"]["mapping_kwargs"] == {"num_layers": 2}
    assert source["init_kwargs"]["D"]["epilogue_kwargs"] == {"mbstd_group_size": 4}
    assert source["augment_p"] == pytest.approx(0.25) and source["training_set_kwargs"]["resolution"] == 32
    assert ckpt["step"] == ckpt["cur_nimg"] == 0 and is_nvlabs_import(out)
    _no_payload_ran(fakes)


def _restored(root: Path, n: int = 8) -> None:
    """A restored train split of random 32 px 'healthy' images (what train_gan reads)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    split = root / "restored" / "train"
    (split / "images").mkdir(parents=True)
    lines = ["file,label"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(split / f"images/{i}.png")
        lines.append(f"images/{i}.png,healthy")
    (split / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_train_gan_fine_tunes_the_import(tmp_path, monkeypatch, fakes):
    from acneops.core.config import load_params
    from acneops.gan import dist as gan_dist
    from acneops.gan.loop import build_state, transfer
    from acneops.stages.train_gan import config_from_params, run

    monkeypatch.chdir(tmp_path)
    _restored(tmp_path)
    params = load_params(_params(tmp_path, total_kimg=0.008, snapshot_kimg=0.008, tick_kimg=0.004))
    assert _cli(fakes["ffhq32"], "models/nvlabs/ffhq32.pt").exit_code == 0
    cfg = config_from_params(params, "tuned")

    state = build_state(cfg, gan_dist.Dist())
    assert transfer(state, cfg, cfg.resume_from) == []  # every tensor loaded, none left as initialised
    imported = checkpoint.load(cfg.resume_from)["model"]
    for key in ("G", "D", "G_ema"):
        ours = getattr(state, key).state_dict()
        assert set(ours) == set(imported[key]) and all(torch.equal(ours[k], imported[key][k]) for k in ours)

    result = run(cfg)  # the train_gan stage itself, two minibatches from the import
    tuned = checkpoint.load(result.checkpoint)
    assert result.cur_nimg == 8 and not result.resumed and not is_nvlabs_import(result.checkpoint)
    assert not torch.equal(tuned["model"]["G"]["synthesis.b32.torgb.weight"],
                           imported["G"]["synthesis.b32.torgb.weight"])


@pytest.mark.parametrize("name, message", [
    ("os_system", "refused global posix.system"),
    ("foreign_class", "refused global training.networks.Plain"),
    ("tensorflow", "a TensorFlow StyleGAN2 pickle (it names dnnlib.tflib.network.Network)"),
])
def test_pickles_naming_other_globals_are_refused_before_anything_runs(tmp_path, monkeypatch, fakes, name, message):
    calls = []
    real = nvlabs_pickle._load_storage
    monkeypatch.setattr(nvlabs_pickle, "_load_storage", lambda data: calls.append(1) or real(data))
    with pytest.raises(AcneopsError, match="Nothing from the file was executed") as err:
        nvlabs_pickle.load_network_pickle(fakes[name])
    assert message in str(err.value) and str(fakes[name]) in str(err.value)
    assert calls == [], "a function of the file ran before its refused global was found"

    result = _cli(fakes[name], tmp_path / "out.pt", "--no-check")
    assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.pt").exists()
    _no_payload_ran(fakes)


def test_module_source_in_the_pickle_is_never_executed(tmp_path, fakes):
    done = import_nvlabs(fakes["exec_src"], tmp_path / "out.pt")
    source = checkpoint.load(done.out)["source"]
    payload = "open(__import__('os').environ['ACNEOPS_EXEC_MARKER'], 'w').write('module_src was executed')\n"
    assert source["module_src_sha256"]["G_ema"] == hashlib.sha256(payload.encode()).hexdigest()
    _no_payload_ran(fakes)


def test_a_mismatch_with_train_gan_names_every_field(tmp_path, monkeypatch, fakes):
    monkeypatch.chdir(tmp_path)
    _params(tmp_path, resolution=64, mapping_layers=8, channel_max=128)
    result = _cli(fakes["ffhq32"], "models/nvlabs/ffhq32.pt")
    assert result.exit_code == 1 and "Traceback" not in result.output
    for line in ("resolution: pickle 32, train_gan.resolution 64", "mapping_layers: pickle 2, "
                 "train_gan.mapping_layers 8", "channel_max: pickle G 64, train_gan.channel_max 128"):
        assert line in result.output.replace("\n", " ")
    assert "z_dim" not in result.output and not (tmp_path / "models").exists()

    empty = tmp_path / "elsewhere"  # no params.yaml: only the values on the command line are checked
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = _cli(fakes["ffhq32"], "out.pt", "--resolution", "64")
    assert result.exit_code == 1 and "resolution: pickle 32, train_gan.resolution 64" in result.output
    assert "mapping_layers" not in result.output
    ok = _cli(fakes["ffhq32"], "out.pt", "--resolution", "32", "--conv-clamp", "0")
    assert ok.exit_code == 0 and checkpoint.load(empty / "out.pt")["model_args"]["G"]["conv_clamp"] is None


def test_conditional_and_foreign_files_are_clear_errors(tmp_path, fakes):
    with pytest.raises(AcneopsError, match=r"class-conditional \(G c_dim=4, D c_dim=4\)"):
        import_nvlabs(fakes["conditional"], tmp_path / "c.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "archive.pt")
    with pytest.raises(AcneopsError, match="not a readable NVIDIA network pickle"):
        import_nvlabs(tmp_path / "archive.pt", tmp_path / "c.pt")
    with pytest.raises(AcneopsError, match="network pickle not found"):
        import_nvlabs(tmp_path / "missing.pkl", tmp_path / "c.pt")
    with pytest.raises(AcneopsError, match="write the import under another name, e.g. models/nvlabs/ffhq.pt"):
        import_nvlabs(fakes["ffhq32"], tmp_path / "models" / "gan" / "base" / "final.pt")
    assert not (tmp_path / "c.pt").exists()
