"""Class-conditional StyleGAN2 (NVIDIA's c_dim): unconditional networks unchanged, c changes G and D,
conditional training through the train_gan entry point (labelled checkpoint, exact resume, start from an
unconditional base), generate(label=...) and the config errors."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_gan import NET, _cfg, _restored

from acneops.core.config import ConfigError, build
from acneops.core.errors import AcneopsError
from acneops.gan import checkpoint
from acneops.gan import dist as gan_dist
from acneops.gan.bank import to_uint8
from acneops.gan.config import TrainGanConfig
from acneops.gan.sampling import checkpoint_labels, generate
from acneops.gan.stylegan2 import Discriminator, Generator, normalize_2nd_moment

CLASSES = ["healthy", "mild", "moderate", "severe"]
ARCH = dict(img_resolution=32, channel_base=128, channel_max=16)  # NET's network
G_ARCH = dict(z_dim=16, w_dim=16, mapping_layers=2, **ARCH)
# a regularised, augmented, style-mixed conditional run: every phase passes c
COND = {"labels": CLASSES, "conditional": True, "pl_weight": 2.0, "style_mixing": 0.9, "ada": True,
        "ada_interval": 1, "augment_p": 0.3, "ema_kimg": 0.01}


def _keys_digest(net: torch.nn.Module) -> str:
    return hashlib.sha256("\n".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())
                          .encode()).hexdigest()[:16]


def _labelled(root: Path, per_class: int = 2) -> Path:
    """test_train_gan's restored fixture with its images spread over CLASSES (in turn)."""
    restored = _restored(root, n=per_class * len(CLASSES))
    manifest = restored / "train" / "manifest.csv"
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows[:-1]):  # the last row is the fixture's test-only class
        row["label"] = CLASSES[i % len(CLASSES)]
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return restored


def _checkpoint(tmp_path: Path, name: str, **kw) -> Path:
    """A checkpoint of freshly built networks, as train_gan writes it."""
    from acneops.gan.loop import build_state, state_dict

    cfg = _cfg(tmp_path, **kw)
    state = build_state(cfg, gan_dist.Dist())
    c = torch.eye(4)[torch.arange(8) % 4] if cfg.c_dim else None
    with torch.no_grad():  # a non-trivial w_avg
        state.G_ema.mapping(torch.randn(8, cfg.z_dim), c, update_emas=True)
    path = tmp_path / f"{name}.pt"
    checkpoint.save(path, state_dict(state, cfg))
    return path


def _same(a, b, where: str = "ckpt") -> None:
    """Recursive equality; tensors bitwise."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_unconditional_networks_and_generation_are_unchanged(tmp_path):
    torch.manual_seed(0)
    G, D = Generator(**G_ARCH), Discriminator(**ARCH)
    # digests of the key:shape lists of the networks as built before c_dim existed (same arguments)
    assert (_keys_digest(G), _keys_digest(D)) == ("f1066c5a90f6fc11", "356ff06feb507fd2")
    assert "c_dim" not in G.model_args and "c_dim" not in D.model_args and G.labels == ()
    torch.manual_seed(0)
    G0, D0 = Generator(**G_ARCH, c_dim=0), Discriminator(**ARCH, c_dim=0)
    _same(G.state_dict(), G0.state_dict())
    _same(D.state_dict(), D0.state_dict())

    # generate() equals the unconditional formula: fc layers on normalised z, truncation to w_avg, synthesis
    path = _checkpoint(tmp_path, "uncond")
    ckpt = checkpoint.load(path)
    assert checkpoint_labels(path) is None and "c_dim" not in ckpt["model_args"]["G"]
    G_ema = checkpoint.build_generator(ckpt)
    seeds, psi = [3, 4, 5], 0.7
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(16) for s in seeds]).astype(np.float32))
    with torch.no_grad():
        x = normalize_2nd_moment(z)
        for idx in range(G_ema.mapping.num_layers):
            x = getattr(G_ema.mapping, f"fc{idx}")(x)
        ws = G_ema.mapping.w_avg.lerp(x.unsqueeze(1).repeat(1, G_ema.num_ws, 1), psi)
        want = to_uint8(G_ema.synthesis(ws, noise_mode="const"))
    assert np.array_equal(generate(path, seeds, psi=psi), want)
    with pytest.raises(ValueError, match="unconditional"):
        G_ema(z, torch.eye(4)[:3])


def test_conditional_generator_depends_on_c_and_is_deterministic():
    torch.manual_seed(0)
    G = Generator(**G_ARCH, c_dim=4, labels=CLASSES).eval()
    assert G.mapping.fc0.weight.shape == (16, 16 + 16)  # z_dim + embed_features (= w_dim)
    assert G.mapping.embed.weight.shape == (16, 4) and G.model_args["labels"] == CLASSES
    z = torch.randn(2, 16).repeat(2, 1)  # the same two z twice
    c = torch.eye(4)[[0, 1, 2, 3]]
    with torch.no_grad():
        img = G(z, c, noise_mode="const")
        again = G(z, c, noise_mode="const")
    assert torch.equal(img, again)  # same (z, c), same bytes
    assert not torch.equal(img[0], img[2]) and not torch.equal(img[1], img[3])  # same z, other class
    with pytest.raises(ValueError, match=r"class-conditional \(c_dim=4\): pass c"):
        G(z)
    with pytest.raises(ValueError, match=r"c must have shape \(4, 4\)"):
        G(z, c[:, :3])
    with pytest.raises(ConfigError, match="4 distinct class names"):
        Generator(**G_ARCH, c_dim=4, labels=CLASSES[:3])


def test_conditional_discriminator_logits_depend_on_c():
    torch.manual_seed(0)
    D = Discriminator(**ARCH, c_dim=4, mapping_layers=2)
    assert D.b4.out.weight.shape == (D.model_args["cmap_dim"], 16) and D.model_args["cmap_dim"] == 16
    img = torch.randn(4, 3, 32, 32)
    a, b = D(img, torch.eye(4)[[0, 0, 0, 0]]), D(img, torch.eye(4)[[1, 2, 3, 1]])
    assert a.shape == b.shape == (4, 1) and torch.equal(a, D(img, torch.eye(4)[[0, 0, 0, 0]]))
    assert not torch.allclose(a, b)
    (a.sum() + b.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    with pytest.raises(ValueError, match="class-conditional"):
        D(img)


def _train(tmp_path: Path, out: str, **kw):
    from acneops.stages.train_gan import run

    cfg = _cfg(tmp_path, out_dir=str(tmp_path / out), metrics_path=str(tmp_path / f"{out}.json"),
               plots_path=str(tmp_path / f"{out}_stats.json"), **{**COND, **kw})
    return cfg, run(cfg)


def test_conditional_run_writes_a_labelled_checkpoint(tmp_path):
    from PIL import Image

    _labelled(tmp_path)
    cfg, result = _train(tmp_path, "cond", total_kimg=0.012, snapshot_kimg=0.012, tick_kimg=0.004)
    ckpt = checkpoint.load(result.checkpoint)
    assert ckpt["model_args"]["G"]["c_dim"] == 4 and ckpt["model_args"]["G"]["labels"] == CLASSES
    assert ckpt["model_args"]["D"]["c_dim"] == 4 and ckpt["config"]["conditional"] is True
    assert ckpt["step"] == 3 and checkpoint_labels(result.checkpoint) == tuple(CLASSES)
    per_class = {label: generate(result.checkpoint, [3, 4, 5], label=label) for label in CLASSES}
    for label, images in per_class.items():
        assert images.shape == (3, 32, 32, 3) and np.array_equal(images, generate(result.checkpoint, [3, 4, 5],
                                                                                    label=label))
        assert int(np.abs(images[2].astype(np.int16) - generate(result.checkpoint, [5], label=label)[0]).max()) <= 1
    assert not np.array_equal(per_class["healthy"], per_class["severe"])
    grid = Image.open(cfg.out_dir / "grids" / "fakes_kimg00000.012.png")
    assert grid.size == (cfg.grid_seeds * 32, len(CLASSES) * 32)  # one row per class


def test_conditional_resume_after_a_stop_equals_uninterrupted_training(tmp_path, monkeypatch):
    from acneops.gan import train as train_mod

    class Stop(Exception):
        pass

    _labelled(tmp_path)
    schedule = dict(total_kimg=0.016, snapshot_kimg=0.008, tick_kimg=0.004)
    _, straight = _train(tmp_path, "straight", **schedule)
    snapshot = train_mod._snapshot

    def stop_after_snapshot(*args, **kwargs):
        snapshot(*args, **kwargs)
        raise Stop  # a kill right after the first checkpoint

    monkeypatch.setattr(train_mod, "_snapshot", stop_after_snapshot)
    with pytest.raises(Stop):
        _train(tmp_path, "stopped", **schedule)
    monkeypatch.setattr(train_mod, "_snapshot", snapshot)
    assert checkpoint.load(tmp_path / "stopped" / "checkpoint.pt")["cur_nimg"] == 8
    _, resumed = _train(tmp_path, "stopped", **schedule)
    assert resumed.resumed
    a, b = checkpoint.load(straight.checkpoint), checkpoint.load(resumed.checkpoint)
    assert a["cur_nimg"] == b["cur_nimg"] == 16 and float(b["augment"]["p"]) > 0
    for key in ("model", "optim", "augment", "pl_mean", "model_args"):
        _same(a[key], b[key], key)
    assert (tmp_path / "straight" / "stats.jsonl").read_text() == (tmp_path / "stopped" / "stats.jsonl").read_text()


def test_reals_carry_their_manifest_labels_and_fakes_draw_training_labels(tmp_path):
    from acneops.gan.bank import ImageBank, batch_indices, labelled_files
    from acneops.gan.loop import build_state, train_step

    restored = _labelled(tmp_path, per_class=1)  # 0.png healthy, 1.png mild, 2.png moderate, 3.png severe
    manifest = restored / "train" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("moderate", "mild").replace("severe", "mild"))
    files, classes = labelled_files(restored, ("healthy", "mild"))
    assert [f.name for f in files] == ["0.png", "1.png", "2.png", "3.png"] and classes == [0, 1, 1, 1]
    cfg = _cfg(tmp_path, **{**COND, "labels": ["healthy", "mild"]})
    state, seen = build_state(cfg, gan_dist.Dist()), []
    d_main = state.loss.d_main

    def spy(real, z, gain, real_c=None, gen_c=None):  # the c the Dmain phase gets
        seen.append((real_c, gen_c))
        return d_main(real, z, gain, real_c, gen_c)

    state.loss.d_main = spy
    train_step(state, cfg, ImageBank(files, 32, classes=classes), gan_dist.Dist())
    (real_c, gen_c), = seen
    want = torch.tensor(classes)[batch_indices(cfg.seed, 0, cfg.batch, len(files))]
    assert torch.equal(real_c, torch.eye(2)[want])
    assert gen_c.shape == (4, 2) and torch.equal(gen_c.sum(1), torch.ones(4))  # one-hot over the 2 classes


def test_conditional_run_starts_from_an_unconditional_base(tmp_path, capsys):
    from acneops.gan.loop import build_state, transfer

    base_path = _checkpoint(tmp_path, "base", labels=CLASSES)
    base = checkpoint.load(base_path)["model"]
    cfg = _cfg(tmp_path, seed=3, resume_from=str(base_path), **COND)
    state = build_state(cfg, gan_dist.Dist())
    fresh = transfer(state, cfg, str(base_path))
    for net in ("G", "G_ema", "D"):
        for name, value in getattr(state, net).state_dict().items():
            if f"{net}.{name}" not in fresh:
                assert torch.equal(value, base[net][name]), f"{net}.{name} not loaded"
    assert any(n.startswith("synthesis.") for n in base["G"])
    assert all(not n.startswith(("G.synthesis.", "G_ema.synthesis.")) for n in fresh)  # synthesis all loaded
    assert {"G.mapping.embed.weight", "G.mapping.fc0.weight", "D.mapping.embed.weight", "D.b4.out.weight",
            "G_ema.mapping.fc0.weight"} <= set(fresh)
    assert not any(n.startswith(("D.b32.", "D.b16.", "D.b8.", "D.b4.conv.", "D.b4.fc.")) for n in fresh)
    assert {n for n in fresh if n.startswith("G.")} == {"G.mapping.embed.weight", "G.mapping.embed.bias",
                                                         "G.mapping.fc0.weight"}  # fc0's bias has the same shape

    # through the train_gan entry point: trains and reports what was freshly initialised
    _labelled(tmp_path)
    _train(tmp_path, "from_base", resume_from=str(base_path), total_kimg=0.004, snapshot_kimg=0.004,
           tick_kimg=0.004)
    assert "freshly initialised: G.mapping.embed.weight" in capsys.readouterr().out
    with pytest.raises(AcneopsError, match="channel_max: base 16 vs params 32"):
        wider = _cfg(tmp_path, channel_max=32, **COND)
        transfer(build_state(wider, gan_dist.Dist()), wider, str(base_path))


def test_config_and_label_errors(tmp_path):
    from acneops.gan.train import config_changes
    from acneops.stages.train_gan import config_from_params

    params = {"train_gan": {**NET, "conditional": True, "runs": {"sorted": {"image_dir": "datasets/sorted/mild"}}}}
    with pytest.raises(ConfigError, match="conditional: true .*image_dir 'datasets/sorted/mild'"):
        config_from_params(params, "sorted")
    with pytest.raises(ConfigError, match="conditional: true is for family stylegan2"):
        _cfg(tmp_path, family="dcgan", base_channels=8, **COND)
    assert build(TrainGanConfig, {**NET, "name": "x", "out_dir": "o", "labels": CLASSES}, "t").c_dim == 0

    uncond, cond = _checkpoint(tmp_path, "u"), _checkpoint(tmp_path, "c", **COND)
    with pytest.raises(AcneopsError, match=r"u\.pt is an unconditional generator.*got label='mild'"):
        generate(uncond, [0], label="mild")
    with pytest.raises(AcneopsError, match=r"c\.pt is class-conditional over \['healthy', 'mild', 'moderate', "
                                           r"'severe'\]: pass label=<one of them> \(got no label\)"):
        generate(cond, [0])
    with pytest.raises(AcneopsError, match=r"over \['healthy'.*\(got label='acne'\)"):
        generate(cond, [0], label="acne")
    assert checkpoint_labels(cond) == tuple(CLASSES)

    # a checkpoint written before `conditional` existed is not "other settings": it resumes
    saved = checkpoint.load(uncond)["config"]
    saved.pop("conditional")
    assert config_changes(saved, _cfg(tmp_path)) == {}
    assert set(config_changes(saved, _cfg(tmp_path, **COND))) >= {"conditional"}
