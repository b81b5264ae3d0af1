"""Behaviour of the synthesize stage's anonymity filter on realistic faces (phantom renderer, 64 px).

The real train split holds phantom faces of all four grades. Generators are real acneops checkpoints,
but what they "generate" is planted by patching :func:`acneops.gan.sampling.generate` (the function the
stage samples with): a memorising generator returns real train images of *any* class with slight noise
or mirrored; an honest one renders new phantom faces from another seed. The stage must export none of
the copies, report the shortfall loudly, top up from its own seed range, and keep honest images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acneops.core.errors import StageError
from acneops.core.io import read_csv
from acneops.data.phantom import PhantomConfig, render
from acneops.gan import checkpoint
from acneops.gan import sampling as gen
from acneops.stages import synthesize
from acneops.synthetic import export as synthesize_lib

RES = 64  # px
GRADES = ("healthy", "mild", "moderate", "severe")
N_TRAIN = 10  # real train faces per grade


def faces(seed: int, label: str, indices: list[int]) -> np.ndarray:
    cfg = PhantomConfig(seed=seed, hr_size=RES, supersample=1, lr_size=16)
    return np.stack([np.asarray(render(cfg, label, i)[0]) for i in indices])


def write_restored(root: Path) -> tuple[Path, np.ndarray]:
    """Restored train (phantom faces, every grade) and a test manifest whose files do not exist."""
    restored = root / "restored"
    real = []
    for split in ("train", "test"):
        (restored / split / "images").mkdir(parents=True)
        rows = []
        for label in GRADES:
            imgs = faces(11 if split == "train" else 12, label, list(range(N_TRAIN)))
            for i, img in enumerate(imgs):
                file = f"images/{label}_{i:03d}.png"
                if split == "train":
                    Image.fromarray(img).save(restored / split / file)
                    real.append(img)
                rows.append({"file": file, "label": label, "lesions": "", "source": "phantom", "split": split,
                             "restorer": "lanczos", "orig_sha256": "0" * 64})
        with open(restored / split / "manifest.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return restored, np.stack(real)


def write_generator(path: Path) -> Path:
    torch.manual_seed(0)
    arch = dict(img_resolution=RES, channel_base=512, channel_max=16)
    G_args, D_args = dict(z_dim=8, w_dim=8, mapping_layers=1, **arch), arch
    G_cls, D_cls = checkpoint.family_models("stylegan2")
    G, D = G_cls(**G_args), D_cls(**D_args)
    checkpoint.save(path, {"format": checkpoint.FORMAT, "family": "stylegan2",
                           "model": {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()},
                           "model_args": {"G": G_args, "D": D_args}, "step": 0, "cur_nimg": 0, "config": {}})
    return path


def copy_of(real: np.ndarray, seed: int) -> np.ndarray:
    """A memorised real train image (any grade): slight noise, every other one mirrored."""
    img = real[seed % len(real)]
    img = img[:, ::-1] if seed % 2 else img
    noise = np.random.default_rng(seed).normal(0.0, 3.0, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def honest(seed: int, label: str) -> np.ndarray:
    return faces(99, label, [seed % 1_000_003])[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("synth_filter")
    restored, real = write_restored(root)
    gens = {name: write_generator(root / f"{name}.pt") for name in ("copier", "half", "honest")}
    return {"root": root, "restored": restored, "real": real, "gens": gens}


def patch_generators(monkeypatch: pytest.MonkeyPatch, world: dict) -> None:
    """copier.pt memorises every image; half.pt memorises seeds divisible by 3; honest.pt never."""
    def generate(path, seeds, psi=1.0, batch=32, **kw):  # noqa: ANN001, ANN202
        kind = Path(path).stem
        out = []
        for s in seeds:
            copies = kind == "copier" or (kind == "half" and s % 3 == 0)
            out.append(copy_of(world["real"], s) if copies else honest(s, "mild"))
        return np.stack(out)

    monkeypatch.setattr(gen, "generate", generate)


def params(world: dict, tag: str, generators: dict[str, str], **overrides: object) -> dict:
    section = {"out_dir": str(world["root"] / tag / "synthetic"),
               "report_path": str(world["root"] / tag / "reports" / "synthesize.json"),
               "restored_dir": str(world["restored"]),
               "generators": {c: str(world["gens"][g]) for c, g in generators.items()},
               "counts": {c: 12 for c in generators}, "psi": 1.0, "seed": 0, "batch": 16,
               "audit_extractor": "tiny", "audit_checkpoint": None, "max_rounds": 2, "class_filter": "", **overrides}
    return {"synthesize": section, "audit": {}}


def test_copying_generator_exports_nothing_and_the_shortfall_is_loud(world: dict,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    patch_generators(monkeypatch, world)
    cfg = synthesize.config_from_params(
        params(world, "copier", {"healthy": "copier", "mild": "honest"}, max_shortfall=1.0))
    with pytest.warns(synthesize_lib.ShortfallWarning, match=r"missing \{'healthy': 12\}"):
        result = synthesize.run(cfg)
    assert result.shortfall == {"healthy": 12}
    assert "SHORTFALL {'healthy': 12}" in result.summary()
    h = result.classes["healthy"]
    assert h["exported"] == 0 and h["flagged"] == h["generated"] and h["rounds"] == 2 and h["generated"] > 12
    assert result.metrics()["healthy/shortfall"] == 12.0 and result.metrics()["healthy/flag_rate"] == 1.0
    assert result.classes["mild"]["exported"] == 12  # the honest class is unaffected
    report = json.loads(cfg.report_path.read_text())
    assert report["shortfall"] == {"healthy": 12} and report["classes"]["healthy"]["shortfall"] == 12
    audit = json.loads((cfg.report_path.parent / "audit_synthesize" / "healthy.json").read_text())
    assert audit["counts"]["flagged"] == h["generated"] and len(audit["flagged"]) == h["generated"]
    assert not any(cfg.out_dir.joinpath("healthy").iterdir())
    assert {r["label"] for r in read_csv(cfg.out_dir / "manifest.csv")} == {"mild"}


def test_shortfall_above_the_limit_fails_and_keeps_the_previous_dataset(world: dict,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    patch_generators(monkeypatch, world)
    good = synthesize.config_from_params(params(world, "limit", {"healthy": "honest", "mild": "honest"}))
    synthesize.run(good)
    before = sorted(p.name for p in good.out_dir.rglob("*.png"))
    bad = synthesize.config_from_params(params(world, "limit", {"healthy": "copier", "mild": "honest"}))
    with pytest.raises(StageError, match=r"missing \{'healthy': 12\}.*previous .* left unchanged"):
        synthesize.run(bad)
    assert sorted(p.name for p in good.out_dir.rglob("*.png")) == before
    report = json.loads(bad.report_path.read_text())
    assert report["status"].startswith("failed") and report["shortfall"] == {"healthy": 12}


def test_partial_copier_is_topped_up_with_fresh_seeds_and_only_honest_images_are_exported(
        world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_generators(monkeypatch, world)
    cfg = synthesize.config_from_params(params(world, "half", {"healthy": "honest", "mild": "half"}))
    result = synthesize.run(cfg)
    m = result.classes["mild"]
    assert m["exported"] == 12 and m["shortfall"] == 0 and m["rounds"] >= 1
    rows = [r for r in read_csv(cfg.out_dir / "manifest.csv") if r["label"] == "mild"]
    seeds = [int(r["seed"]) for r in rows]
    assert all(s % 3 != 0 for s in seeds)  # no memorised image got through
    base = synthesize_lib.class_seeds(0, 1, 0, 1)[0]
    assert any(s >= base + synthesize_lib.TOPUP_OFFSET for s in seeds)  # replacements from the top-up range
    copies = sum(1 for s in synthesize_lib.class_seeds(0, 1, 0, 12) if s % 3 == 0)
    assert m["flagged"] >= copies  # every memorised first-round image was caught
    honest_rate = result.classes["healthy"]["flag_rate"]
    print(f"\nhonest flag rate {honest_rate:.3f}; partial copier flagged {m['flagged']}/{m['generated']}")
    assert honest_rate <= 0.1
    real = world["real"]
    for r in rows:  # and no exported pixels equal a real train image
        img = np.asarray(Image.open(cfg.out_dir / r["file"]).convert("RGB"))
        assert not (img == real).all(axis=(1, 2, 3)).any()
