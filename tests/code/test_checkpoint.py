"""The one checkpoint format (acneops.core.checkpoint): GAN, classifier and SR checkpoints describe themselves,
are written atomically, rebuild their model from the file alone, and a wrong file is an error naming it and
the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from acneops.core import checkpoint as core
from acneops.core.errors import AcneopsError


def gan_file(path: Path) -> Path:
    from acneops.gan import checkpoint
    from acneops.gan.dcgan import Discriminator, Generator

    torch.manual_seed(0)
    G, D = Generator(z_dim=8, img_resolution=32, base_channels=8), Discriminator(img_resolution=32, base_channels=8)
    checkpoint.save(path, {"family": "dcgan", "model": {"G": G.state_dict(), "D": D.state_dict(),
                                                        "G_ema": G.state_dict()},
                           "model_args": {"G": G.model_args, "D": D.model_args}, "step": 3, "cur_nimg": 48,
                           "config": {"lr_g": 0.005}})
    return path


def classifier_file(path: Path) -> Path:
    from acneops.classify.backbones import (
        create_classifier,
        model_args_for,
        save_checkpoint,
    )

    torch.manual_seed(0)
    model = create_classifier("resnet18", 2, img_size=32)
    save_checkpoint(path, model, model_args_for("resnet18", 2, 32, ["a", "b"]), epoch=2, config={"lr": 1e-3},
                    metrics={"val_acc": 0.5})
    return path


def sr_file(path: Path) -> Path:
    from acneops.data import sr

    settings = sr.SRSettings(steps=1, batch=1, patch=8, channels=4, blocks=1)
    model = sr.build_sr(channels=4, blocks=1)
    sr.save_checkpoint(path, model, torch.optim.Adam(model.parameters()), settings, {"resolution": 16})
    return path


WRITERS = {"gan": (gan_file, "dcgan", 3), "classifier": (classifier_file, "resnet18", 2),
           "sr": (sr_file, "residual_sr", 1)}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_kind_is_the_one_self_describing_format(tmp_path, kind):
    write, family, step = WRITERS[kind]
    path = write(tmp_path / f"{kind}.pt")
    raw = torch.load(path, weights_only=True)  # plain data and tensors only
    assert raw["format"] == core.FORMAT and raw["kind"] == kind and raw["family"] == family
    assert raw["step"] == step and isinstance(raw["config"], dict) and isinstance(raw["model_args"], dict)
    assert set(core.REQUIRED_KEYS) <= set(raw)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind
    assert core.load_checkpoint(path, kind)["family"] == family


def test_each_package_rebuilds_its_model_from_the_file_alone(tmp_path):
    from acneops.classify.backbones import load_classifier
    from acneops.data.sr import load_sr
    from acneops.gan import checkpoint

    G = checkpoint.build_generator(checkpoint.load(gan_file(tmp_path / "g.pt")))
    assert G(torch.zeros(1, 8)).shape == (1, 3, 32, 32)
    model, args = load_classifier(classifier_file(tmp_path / "c.pt"))
    assert args["labels"] == ["a", "b"] and model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    assert not load_sr(sr_file(tmp_path / "s.pt")).training


def test_wrong_kind_old_format_corrupt_and_missing_files_name_the_file_and_the_fix(tmp_path):
    from acneops.classify.backbones import read_checkpoint
    from acneops.data.sr import load_sr
    from acneops.gan import checkpoint

    cls = classifier_file(tmp_path / "best.pt")
    with pytest.raises(AcneopsError, match=r"best.pt: not an acneops GAN checkpoint \(format 'acneops-checkpoint/1', "
                                           r"kind 'classifier'.*acneops run train_gan"):
        checkpoint.load(cls)
    old = tmp_path / "old.pt"
    torch.save({"format": "acneops-gan/1", "family": "dcgan", "model": {}}, old)  # written before the one format
    with pytest.raises(AcneopsError, match=r"old.pt: not an acneops GAN checkpoint \(format 'acneops-gan/1'.*older"):
        checkpoint.load(old)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(cls.read_bytes()[:1000])  # truncated
    with pytest.raises(AcneopsError, match=r"corrupt.pt: not a readable acneops checkpoint .*delete it and run "
                                           r"`dvc repro train_classifier`"):
        read_checkpoint(corrupt)
    with pytest.raises(AcneopsError, match=r"none.pt: SR checkpoint not found; run `dvc repro restore`"):
        load_sr(tmp_path / "none.pt")
    torch.save({"format": core.FORMAT, "kind": "sr", "model": {}}, tmp_path / "partial.pt")
    with pytest.raises(AcneopsError, match=r"partial.pt: SR checkpoint lacks \['family', 'model_args', 'step', "
                                           r"'config'\]"):
        load_sr(tmp_path / "partial.pt")


def test_a_failed_write_keeps_the_previous_file_and_an_incomplete_dict_is_refused(tmp_path, monkeypatch):
    path = classifier_file(tmp_path / "best.pt")
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        classifier_file(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"gan checkpoint dict lacks \['family', 'cur_nimg'\]"):
        core.save_checkpoint(tmp_path / "x.pt", "gan", {"model": {}, "model_args": {}, "step": 0, "config": {}},
                             required=("cur_nimg",))
    assert not (tmp_path / "x.pt").exists()
