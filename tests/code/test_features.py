"""Feature extractors (tiny, domain, inception vs pytorch-fid), the metrics config and the feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acneops.core.config import ConfigError
from acneops.core.errors import AcneopsError
from acneops.features import inception as inc
from acneops.features.cache import cached_stats
from acneops.features.extractors import (
    EXTRACTORS,
    FeatureExtractor,
    extractor_from_config,
    get_extractor,
)
from acneops.metrics import MetricsConfig, build_metrics_config


def _images(n: int, h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (N, H, W, 3) so features differ between images."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(n, 5, 6, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((w, h), Image.BILINEAR)) for s in small])


def _write_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        paths.append(folder / f"img_{i:03d}.png")
        Image.fromarray(im).save(paths[-1])
    return paths


# ---------------------------------------------------------------- registry and tiny
def test_registry_names_and_unknown_name():
    assert set(EXTRACTORS) == {"inception", "domain", "tiny"}
    with pytest.raises(AcneopsError, match="registered"):
        get_extractor("vgg")


def test_tiny_is_deterministic_and_seed_dependent():
    imgs = _images(6)
    a = get_extractor("tiny", seed=0)
    feats = a.extract(imgs, batch_size=4, progress=False)
    assert isinstance(a, FeatureExtractor)
    assert feats.shape == (6, a.dim) and a.dim == 64 and feats.dtype == np.float64
    assert a.metric_prefix == "fd_tiny" and a.kernel_prefix == "kd_tiny"
    np.testing.assert_array_equal(feats, get_extractor("tiny", seed=0).extract(imgs, batch_size=4, progress=False))
    assert not np.allclose(feats, get_extractor("tiny", seed=1).extract(imgs, progress=False))
    assert np.ptp(feats, axis=0).max() > 1e-3  # different images give different features
    np.testing.assert_allclose(a.extract(imgs, batch_size=1, progress=False), feats, rtol=1e-5, atol=1e-6)


def test_files_equal_arrays_and_mixed_sizes(tmp_path):
    ext = get_extractor("tiny", seed=0)
    imgs = _images(5)
    paths = _write_pngs(imgs, tmp_path / "a")
    np.testing.assert_allclose(ext.extract(paths, batch_size=2, progress=False),
                               ext.extract(imgs, progress=False), rtol=1e-6, atol=1e-7)
    big = _images(1, h=70, w=90, seed=3)[0]
    mixed = ext.extract([imgs[0], big, str(paths[1])], progress=False)
    np.testing.assert_allclose(mixed[1], ext.extract(big[None], progress=False)[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mixed[2], ext.extract(imgs[1:2], progress=False)[0], rtol=1e-6, atol=1e-7)


def test_bad_images_are_clear_errors(tmp_path):
    ext = get_extractor("tiny")
    with pytest.raises(AcneopsError, match="uint8"):
        ext.extract(np.zeros((2, 8, 8, 3), dtype=np.float32), progress=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(AcneopsError, match="broken.png"):
        ext.extract([bad], progress=False)
    with pytest.raises(AcneopsError, match=r"images\[1\]"):
        ext.extract([_images(1)[0], np.zeros((8, 8), np.uint8)], progress=False)


# ---------------------------------------------------------------- domain (timm classifier)
def _classifier_checkpoint(path: Path, img_size: int = 32) -> torch.nn.Module:
    import timm

    from acneops.classify.backbones import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    save_checkpoint(path, model, {"arch": "resnet18", "num_classes": 3, "img_size": img_size}, epoch=7)
    return model


def test_domain_features_are_the_classifier_pre_logits(tmp_path):
    ckpt = tmp_path / "clf.pt"
    model = _classifier_checkpoint(ckpt)
    ext = get_extractor("domain", checkpoint=ckpt)
    assert (ext.dim, ext.metric_prefix, ext.kernel_prefix) == (512, "fd_domain", "kd_domain")
    imgs = _images(3)
    feats = ext.extract(imgs, progress=False)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.forward_head(model.forward_features((x - mean) / std), pre_logits=True)
    np.testing.assert_allclose(feats, ref.double().numpy(), rtol=1e-5, atol=1e-6)


def test_domain_bad_checkpoints(tmp_path):
    with pytest.raises(AcneopsError, match="missing.pt"):
        get_extractor("domain", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(AcneopsError, match="domain_checkpoint"):
        get_extractor("domain")
    from acneops.core.checkpoint import save_checkpoint

    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(AcneopsError, match="other.pt: not an acneops classifier checkpoint"):
        get_extractor("domain", checkpoint=tmp_path / "other.pt")
    save_checkpoint(tmp_path / "empty.pt", "classifier", {"model": {}, "family": "resnet18", "step": 0, "config": {},
                                                          "model_args": {"arch": "resnet18", "num_classes": 3}})
    with pytest.raises(AcneopsError, match="weights do not"):
        get_extractor("domain", checkpoint=tmp_path / "empty.pt")


# ---------------------------------------------------------------- inception vs pytorch-fid
@pytest.fixture(scope="module")
def random_fid_weights(tmp_path_factory) -> Path:
    """A state_dict in the format of pytorch-fid's weights file, random weights with calibrated BN stats."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # running stats = the statistics of the calibration batch
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    net.train()
    with torch.no_grad():
        net(torch.rand(3, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("fid") / inc.WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


def test_inception_equals_pytorch_fid(random_fid_weights, monkeypatch):
    import pytorch_fid.inception as pf

    state = torch.load(random_fid_weights, weights_only=True)
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: state)  # no download
    reference = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True).eval()
    ext = get_extractor("inception", weights_path=random_fid_weights)
    assert (ext.dim, ext.input_size, ext.metric_prefix, ext.kernel_prefix) == (2048, 299, "fid", "kid")
    imgs = _images(2, h=64, w=80)
    ours = ext.extract(imgs, progress=False)
    with torch.no_grad():  # pytorch-fid's input: ToTensor() of the uint8 image, values in [0, 1]
        ref = reference(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)[0].flatten(1).double().numpy()
    assert ref.std() > 1e-3  # features are not degenerate, so equality means something
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_missing_inception_weights_names_file_url_and_key(tmp_path):
    with pytest.raises(AcneopsError) as err:
        get_extractor("inception", weights_path=tmp_path / inc.WEIGHTS_FILE)
    msg = str(err.value)
    assert inc.WEIGHTS_FILE in msg and inc.WEIGHTS_URL in msg and "metrics.inception_weights" in msg
    with pytest.raises(AcneopsError, match="metrics.inception_weights"):
        get_extractor("inception")


def test_inception_checksum_and_wrong_file(random_fid_weights, tmp_path, monkeypatch):
    with pytest.raises(AcneopsError, match="does not match"):
        get_extractor("inception", weights_path=random_fid_weights, expected_sha256="0" * 64)
    monkeypatch.setenv(inc.SHA256_ENV, "f" * 64)
    with pytest.raises(AcneopsError, match=inc.SHA256_ENV):
        get_extractor("inception", weights_path=random_fid_weights)
    monkeypatch.delenv(inc.SHA256_ENV)
    other = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(AcneopsError, match="not the TF-Inception FID weights"):
        get_extractor("inception", weights_path=other)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(AcneopsError, match="junk.pth"):
        get_extractor("inception", weights_path=tmp_path / "junk.pth")


# ---------------------------------------------------------------- config
def test_metrics_config_from_params(tmp_path):
    cfg = build_metrics_config({"extractor": "tiny", "kid_subset_size": 50})
    assert isinstance(cfg, MetricsConfig) and cfg.kid_subset_size == 50
    assert extractor_from_config(cfg).name == "tiny"
    with pytest.raises(ConfigError, match="unknown key"):
        build_metrics_config({"extractor": "tiny", "kid_subsetsize": 50})
    with pytest.raises(ConfigError, match="inception_weights"):
        build_metrics_config({"extractor": "inception"})
    with pytest.raises(ConfigError, match="metrics.extractor"):
        build_metrics_config({"extractor": "clip"})


# ---------------------------------------------------------------- cache
class _CountingExtractor(FeatureExtractor):
    """The tiny extractor, counting how many images it really ran."""

    def __init__(self) -> None:
        base = get_extractor("tiny", seed=0)
        self.__dict__.update(base.__dict__)
        self.calls = 0

    def extract(self, images, batch_size=64, progress=True, desc=None):
        self.calls += len(images)
        return super().extract(images, batch_size, progress, desc)


def test_cache_hits_reorders_and_invalidates(tmp_path):
    files = _write_pngs(_images(5), tmp_path / "ds")
    cache = tmp_path / "cache"
    ext = _CountingExtractor()
    first = cached_stats(ext, files, cache, keep_features=True, progress=False)
    assert not first.cache_hit and ext.calls == 5 and first.path.is_file()
    assert not list(cache.glob("*.tmp"))
    again = cached_stats(ext, list(reversed(files)), cache, keep_features=True, progress=False)
    assert again.cache_hit and ext.calls == 5  # nothing extracted the second time
    np.testing.assert_array_equal(again.features, first.features[::-1])  # rows follow the caller's order
    np.testing.assert_array_equal(again.mu, first.mu)
    np.testing.assert_allclose(first.features, ext.extract(files, progress=False), rtol=1e-6, atol=1e-7)
    ext.calls = 0
    Image.fromarray(_images(1, seed=9)[0]).save(files[2])  # one changed file invalidates the entry
    changed = cached_stats(ext, files, cache, progress=False)
    assert not changed.cache_hit and ext.calls == 5 and changed.key != first.key
    other = cached_stats(get_extractor("tiny", seed=1), files, cache, progress=False)
    assert not other.cache_hit  # another network never reuses these statistics


def test_cache_recovers_from_corrupt_entry(tmp_path):
    files = _write_pngs(_images(3), tmp_path / "ds")
    ext = _CountingExtractor()
    first = cached_stats(ext, files, tmp_path / "c", progress=False)
    first.path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        second = cached_stats(ext, files, tmp_path / "c", progress=False)
    assert not second.cache_hit and np.allclose(second.mu, first.mu)
    assert cached_stats(ext, files, tmp_path / "c", progress=False).cache_hit
    with pytest.raises(AcneopsError, match="at least 2"):
        cached_stats(ext, files[:1], tmp_path / "c", progress=False)
