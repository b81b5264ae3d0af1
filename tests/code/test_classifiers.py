"""acneops.classify.backbones: registry-driven build checks, weight loading, checkpoints, predict."""

from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch

from acneops.classify import backbones as classifiers
from acneops.classify.backbones import (
    REGISTRY,
    create_classifier,
    load_classifier,
    model_args_for,
    predict,
    save_checkpoint,
)
from acneops.core.errors import AcneopsError


def _forward_backward(model: torch.nn.Module, size: int, num_classes: int) -> None:
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_registry_names_are_timm_models_with_timm_normalisation():
    for name, bb in REGISTRY.items():
        assert timm.is_model(bb.timm_name), name
        cfg = bb.pretrained_cfg()
        assert bb.mean == tuple(cfg.mean) and bb.std == tuple(cfg.std)
        assert bb.native_size in (224, 299)
        if bb.pretrained_tag:
            assert bb.hub_id == f"timm/{bb.timm_name}.{bb.pretrained_tag}"


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_backbone_forward_backward_at_tiny_size(arch):
    """Every registered backbone (the three of the first paper and resnet18) at its smallest input, in the
    default run: finite logits of the right shape and a finite gradient on every parameter. Measured on 2 cores:
    about 6 s of CPU for all four, most of it inception_resnet_v2's and resnetv2_152's weight init."""
    torch.manual_seed(0)
    size = max(REGISTRY[arch].min_size, 32)  # px: 75 for inception_resnet_v2, 32 for the others
    _forward_backward(create_classifier(arch, 4, img_size=size), size, 4)


def test_too_small_input_and_unknown_arch_are_clear_errors():
    with pytest.raises(AcneopsError, match="at least 75 px"):
        create_classifier("inception_resnet_v2", 4, img_size=64)
    with pytest.raises(AcneopsError, match="supported"):
        create_classifier("vgg16", 4)


def test_pretrained_true_offline_fails_fast_with_actionable_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.perf_counter()
    with pytest.raises(AcneopsError) as err:
        create_classifier("resnet18", 4, pretrained=True)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "unreachable" in message and "timm/resnet18.tv_in1k" in message and "pretrained: /path/to/" in message


def test_pretrained_true_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    """Without offline mode set, an unreachable endpoint is detected by the probe, not by minutes of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.perf_counter()
    with pytest.raises(AcneopsError, match="unreachable"):
        create_classifier("resnetv2_50", 4, pretrained=True)
    assert time.perf_counter() - start < 10


def test_pretrained_true_offline_uses_weights_already_in_the_hub_cache(monkeypatch, tmp_path):
    """A hub cache copied from a connected machine serves `pretrained: true` without any network."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("resnet18", num_classes=1000)
    repo = tmp_path / "hub" / "models--timm--resnet18.tv_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    model = create_classifier("resnet18", 4, pretrained=True)
    assert torch.equal(model.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])


def test_pretrained_true_without_published_weights_says_so():
    with pytest.raises(AcneopsError, match="no pretrained weights for resnetv2_152"):
        classifiers.hub_weights_file("resnetv2_152")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_backbone_and_resets_head(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=1000)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    model = create_classifier("resnet18", 4, pretrained=str(path))
    got, want = model.state_dict(), source.state_dict()
    backbone_keys = [k for k in want if not k.startswith("fc.")]
    assert backbone_keys and all(torch.equal(got[k], want[k]) for k in backbone_keys)
    assert got["fc.weight"].shape == (4, 512)
    torch.manual_seed(2)
    fresh = timm.create_model("resnet18", num_classes=4)
    assert torch.equal(got["fc.weight"], fresh.state_dict()["fc.weight"])  # the seeded fresh init, not the file's


def test_local_weights_of_another_arch_is_a_clear_error(tmp_path):
    path = tmp_path / "resnetv2_50.pth"
    torch.save(timm.create_model("resnetv2_50", num_classes=10).state_dict(), path)
    with pytest.raises(AcneopsError) as err:
        create_classifier("resnet18", 4, pretrained=path)
    message = str(err.value)
    assert str(path) in message and "missing" in message and "unexpected" in message and "conv1.weight" in message


def test_missing_or_garbage_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(AcneopsError, match="not found"):
        create_classifier("resnet18", 4, pretrained=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(AcneopsError, match="cannot read weights"):
        create_classifier("resnet18", 4, pretrained=bad)


def test_checkpoint_round_trip_and_domain_feature_path(tmp_path):
    torch.manual_seed(0)
    model = create_classifier("resnet18", 3, img_size=32)
    args = model_args_for("resnet18", 3, 32, ["a", "b", "c"])
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, args, epoch=2, config={"lr": 1e-4}, metrics={"val_acc": 0.5})
    assert not list(tmp_path.glob("*.tmp"))
    loaded, loaded_args = load_classifier(path)
    assert loaded_args == args and not loaded.training
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # what the 'domain' feature extractor does with the checkpoint, with safe unpickling
    ckpt = torch.load(path, weights_only=True)
    rebuilt = timm.create_model(ckpt["model_args"]["arch"], num_classes=ckpt["model_args"]["num_classes"])
    rebuilt.load_state_dict(ckpt["model"])
    feats = rebuilt.eval().forward_head(rebuilt.forward_features(x), pre_logits=True)
    assert feats.shape == (2, 512) and ckpt["epoch"] == 2


def test_load_classifier_rejects_non_checkpoints(tmp_path):
    with pytest.raises(AcneopsError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(AcneopsError, match="not an acneops classifier checkpoint"):
        load_classifier(path)


def test_predict_arrays_and_paths_agree(tmp_path):
    from PIL import Image

    torch.manual_seed(0)
    model = create_classifier("resnet18", 2, img_size=32).eval()
    args = model_args_for("resnet18", 2, 32, ["x", "y"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 40, 40, 3), dtype=np.uint8)
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(im).save(paths[-1])
    from_arrays = predict(model, args, images, batch=2)
    from_paths = predict(model, args, paths, batch=3)
    assert from_arrays.shape == (5, 2) and from_arrays.dtype == np.float32
    np.testing.assert_allclose(from_arrays.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(from_arrays, from_paths, atol=1e-6)
    with pytest.raises(AcneopsError, match="uint8"):
        predict(model, args, images.astype(np.float32))
