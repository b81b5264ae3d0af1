"""Image classifiers: a registry of timm backbones, weight loading, self-describing checkpoints, predict.

Backbones follow the two reference methods: InceptionResNetV2, ResNet50V2 and ResNet152V2 (the
hierarchical StyleGAN2 method) and ResNet18 (the DCGAN method, the CPU default).
- Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
  Learning", AAAI 2017 (arXiv:1602.07261).
- He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027) — the
  pre-activation ResNet "v2" family.
- He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385).

Models are built by timm (``timm.create_model``), so any consumer can rebuild one from a checkpoint's
``model_args`` (``arch``, ``num_classes``) and ``load_state_dict(ckpt['model'])``. ImageNet weights
come from the Hugging Face hub (``pretrained: true``) or from a local file in timm format
(``pretrained: /path/model.safetensors``); both go through :func:`load_backbone_weights`, which
checks every key except the classifier head, which is always re-initialised for ``num_classes``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from acneops.core.checkpoint import load_checkpoint
from acneops.core.checkpoint import save_checkpoint as write_checkpoint
from acneops.core.errors import AcneopsError

HUB_PROBE_TIMEOUT_S = 3.0  # seconds to wait for a TCP connection to the hub before calling it offline
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # file names of timm weights on the hub


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One supported backbone: its timm name, where its ImageNet weights live, its size limits."""

    timm_name: str  # timm architecture name (timm.list_models)
    pretrained_tag: str | None  # timm pretrained tag (hub repo timm/<name>.<tag>); None: timm has none
    min_size: int  # px; smallest square input the network accepts
    reference: str  # what the backbone stands for in the papers

    @property
    def pretrained_name(self) -> str:
        return f"{self.timm_name}.{self.pretrained_tag}" if self.pretrained_tag else self.timm_name

    def pretrained_cfg(self) -> Any:
        """timm's pretrained config (mean, std, input_size, classifier, hf_hub_id), without building."""
        from timm.models import get_pretrained_cfg

        return get_pretrained_cfg(self.pretrained_name)

    @property
    def native_size(self) -> int:
        return int(self.pretrained_cfg().input_size[-1])  # px

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.pretrained_cfg().mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.pretrained_cfg().std)

    @property
    def hub_id(self) -> str | None:
        return self.pretrained_cfg().hf_hub_id if self.pretrained_tag else None


# Plain registry dict: name in params -> backbone. timm 1.0 names; the Keras "ResNet50V2/152V2" of
# the first method are timm's pre-activation `resnetv2_50` / `resnetv2_152` (not the BiT variants).
REGISTRY: dict[str, Backbone] = {
    "inception_resnet_v2": Backbone("inception_resnet_v2", "tf_in1k", 75, "Keras InceptionResNetV2 (method 1)"),
    "resnetv2_50": Backbone("resnetv2_50", "a1h_in1k", 16, "Keras ResNet50V2 (method 1)"),
    # timm publishes no ImageNet weights for the plain resnetv2_152; only a local file can be used.
    "resnetv2_152": Backbone("resnetv2_152", None, 16, "Keras ResNet152V2 (method 1)"),
    "resnet18": Backbone("resnet18", "tv_in1k", 16, "torchvision ResNet18 (method 2)"),
}


def backbone(arch: str) -> Backbone:
    """The registry entry for ``arch`` or a clear error listing the supported ones."""
    if arch not in REGISTRY:
        raise AcneopsError(f"unknown classifier arch '{arch}'; supported: {sorted(REGISTRY)}")
    return REGISTRY[arch]


def model_args_for(arch: str, num_classes: int, img_size: int, labels: Sequence[str]) -> dict[str, Any]:
    """Everything needed to rebuild and feed the model: timm arch, classes, input size, normalisation."""
    bb = backbone(arch)
    if len(labels) != num_classes:
        raise AcneopsError(f"{len(labels)} labels {list(labels)} for {num_classes} classes")
    return {
        "arch": bb.timm_name,
        "num_classes": int(num_classes),
        "img_size": int(img_size),
        "mean": list(bb.mean),
        "std": list(bb.std),
        "labels": list(labels),
    }


def create_classifier(
    arch: str, num_classes: int, pretrained: bool | str | Path = False, img_size: int | None = None
) -> nn.Module:
    """A timm classifier with a fresh ``num_classes`` head.

    ``pretrained``: False (random init), True (ImageNet weights from the Hugging Face hub, or its local
    cache when offline) or a path to a timm-format weights file (.safetensors, .pth, .pt, .bin).
    ``img_size`` (px) is only checked against the backbone's minimum input.
    """
    import timm

    bb = backbone(arch)
    if img_size is not None and img_size < bb.min_size:
        raise AcneopsError(f"{arch} needs inputs of at least {bb.min_size} px, got img_size={img_size}")
    if num_classes < 2:
        raise AcneopsError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
    model = timm.create_model(bb.timm_name, pretrained=False, num_classes=num_classes)
    if pretrained is True:
        load_backbone_weights(model, hub_weights_file(arch), arch)
    elif isinstance(pretrained, (str, Path)) and str(pretrained):
        load_backbone_weights(model, Path(pretrained), arch)
    elif pretrained not in (False, None, ""):
        raise AcneopsError(f"pretrained must be false, true or a weights file path, got {pretrained!r}")
    return model


def _hub_reachable(endpoint: str) -> bool:
    """True if a TCP connection to the hub opens within HUB_PROBE_TIMEOUT_S (and offline mode is off)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_weights_file(arch: str) -> Path:
    """Local path of the backbone's hub weights: the hub cache if present, else a download.

    Probes the hub first so an offline machine gets a clear error in seconds instead of minutes of
    retries.
    """
    import huggingface_hub
    from huggingface_hub import constants

    bb = backbone(arch)
    if bb.hub_id is None:
        raise AcneopsError(
            f"timm publishes no pretrained weights for {bb.timm_name}; pass a local weights file "
            f"(timm format) as `pretrained: /path/to/model.safetensors`, or set pretrained: false"
        )
    for name in WEIGHT_FILES:
        cached = huggingface_hub.try_to_load_from_cache(bb.hub_id, name)
        if isinstance(cached, str):
            return Path(cached)
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
    offline_msg = (
        f"pretrained weights for {arch} need the Hugging Face hub ({endpoint}), which is unreachable; "
        f"download {bb.hub_id} ({WEIGHT_FILES[0]}) elsewhere and pass its file as "
        f"`pretrained: /path/to/model.safetensors|.pth`, or set pretrained: false"
    )
    if not _hub_reachable(endpoint):
        raise AcneopsError(offline_msg)
    try:
        return Path(huggingface_hub.hf_hub_download(bb.hub_id, WEIGHT_FILES[0], etag_timeout=HUB_PROBE_TIMEOUT_S))
    except Exception as exc:  # any hub/network failure becomes the same actionable message
        raise AcneopsError(f"{offline_msg} ({type(exc).__name__}: {exc})") from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, a torch state dict, or a checkpoint holding one."""
    if not path.is_file():
        raise AcneopsError(f"{path}: weights file not found; fix `pretrained` in params")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AcneopsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for key in ("model", "state_dict"):  # a checkpoint that wraps its state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AcneopsError(f"{path}: not a state dict of tensors (timm format expected)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone_weights(model: nn.Module, path: Path, arch: str) -> None:
    """Load every non-head tensor of ``path`` into ``model`` strictly; the head keeps its fresh init."""
    head = backbone(arch).pretrained_cfg().classifier  # e.g. 'fc', 'head.fc', 'classif'
    is_head = lambda key: key == head or key.startswith(f"{head}.")  # noqa: E731
    source = {k: v for k, v in read_state_dict(path).items() if not is_head(k)}
    target = {k: v for k, v in model.state_dict().items() if not is_head(k)}
    missing = [k for k in target if k not in source]
    unexpected = [k for k in source if k not in target]
    wrong_shape = [
        f"{k} {tuple(source[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in source and source[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise AcneopsError(
            f"{path}: weights do not fit {arch}: {len(missing)} missing (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected (first: {unexpected[:3]}), {len(wrong_shape)} of wrong shape "
            f"(first: {wrong_shape[:3]}); pass a timm-format {backbone(arch).timm_name} file"
        )
    model.load_state_dict(source, strict=False)


def save_checkpoint(path: str | Path, model: nn.Module, model_args: dict[str, Any], epoch: int = 0,
                    config: dict[str, Any] | None = None, **extra: Any) -> str:
    """Write a classifier checkpoint (kind ``classifier`` of :mod:`acneops.core.checkpoint`) atomically.

    ``family`` is the timm architecture, ``step`` (and ``epoch``) the epochs trained; ``extra`` holds 'metrics'
    and, for resume, 'optim', 'rng', 'best'. Returns the file's sha256.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return write_checkpoint(path, "classifier", {
        "model": state, "model_args": dict(model_args), "family": model_args["arch"], "step": int(epoch),
        "epoch": int(epoch), "config": dict(config or {}), **extra})


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The classifier checkpoint dict at ``path`` (tensors and plain Python data; nothing executable is
    unpickled); a missing or wrong file is an AcneopsError naming it and the fix. ``path`` may be a model URI
    (``models:/acneops-classifier-real@champion``): the registered model's checkpoint is downloaded (cached)."""
    from acneops.tracking.model_uri import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(path), "classifier")


def load_classifier(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the classifier of a checkpoint, in eval mode, with its ``model_args``."""
    import timm

    ckpt = read_checkpoint(path)
    args = ckpt["model_args"]
    model = timm.create_model(args["arch"], num_classes=args["num_classes"], pretrained=False)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise AcneopsError(f"{path}: weights do not match model_args {args}: {exc}") from exc
    return model.eval(), dict(args)


def predict(
    model: nn.Module,
    model_args: dict[str, Any],
    images: np.ndarray | Sequence[str | Path],
    batch: int = 64,
    desc: str | None = None,
) -> np.ndarray:
    """Class probabilities (N, C) float32 for uint8 images (N, H, W, 3) or image file paths.

    Images are resized to ``model_args['img_size']`` and normalised exactly as in validation.
    ``desc`` (the stage and class, e.g. ``"sort: sorter labels"``): a progress bar on stderr; None: no bar.
    """
    from acneops.classify.data import eval_transform
    from acneops.core.progress import progress
    from acneops.data.decode import read_rgb

    tf = eval_transform(model_args["img_size"], model_args["mean"], model_args["std"])
    is_array = isinstance(images, np.ndarray)
    if is_array and (images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8):
        raise AcneopsError(f"predict expects uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    n = len(images)
    probs = np.zeros((n, model_args["num_classes"]), dtype=np.float32)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.inference_mode(), progress(total=n, desc=desc or "predict", unit="img", leave=False,
                                          disable=desc is None) as bar:
        for start in range(0, n, batch):
            chunk = images[start : start + batch]
            pil = [_to_pil(x) for x in chunk] if is_array else [read_rgb(p) for p in chunk]
            x = torch.stack([tf(im) for im in pil]).to(device)  # (B, 3, S, S)
            probs[start : start + len(pil)] = torch.softmax(model(x).float(), dim=1).cpu().numpy()
            bar.update(len(pil))
    model.train(was_training)
    return probs


def _to_pil(array: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(array))  # (H, W, 3) uint8 -> RGB
