"""Training images for the GANs: a folder of PNGs or a restored train split, read with Pillow.

Real images are only reached through :func:`acneops.data.access.load_split` with role ``gan`` (the
train split; the frozen test split is refused there). The order in which a training run sees the
images is a pure function of ``(seed, step)`` (:func:`batch_indices`), so a run resumed from a
checkpoint draws exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from acneops.core.errors import StageError

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

CACHE_BYTES = 2 << 30  # image sets up to 2 GiB (uint8) are held in memory, larger ones are read per batch


def training_files(restored_dir: Path, labels: tuple[str, ...], image_dir: Path | None) -> list[Path]:
    """The image files one GAN trains on: every PNG of ``image_dir`` (sorted), or the restored train
    split filtered to ``labels``."""
    if image_dir is not None:
        if not Path(image_dir).is_dir():
            raise StageError(f"{image_dir}: image_dir not found; create it or set image_dir to '' and use labels")
        files = sorted(Path(image_dir).glob("*.png"))
        if not files:
            raise StageError(f"{image_dir}: no *.png images to train on; fill the folder or fix image_dir")
        return files
    return labelled_files(restored_dir, labels)[0]


def labelled_files(restored_dir: Path, labels: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    """The restored train images of ``labels`` (manifest order) and each one's class: its index in ``labels``
    (the column of a conditional GAN's one-hot c)."""
    from acneops.data.access import load_split

    try:
        samples = load_split(restored_dir, "train", role="gan", labels=labels)
    except FileNotFoundError as exc:
        raise StageError(str(exc)) from exc
    missing = [label for label in labels if not any(s.label == label for s in samples)]
    if missing:
        raise StageError(
            f"{Path(restored_dir) / 'train' / 'manifest.csv'}: no train images with label in {missing}; "
            "fix train_gan labels (they must name classes of the restored train split)"
        )
    return [s.path for s in samples], [labels.index(s.label) for s in samples]


def read_image(path: Path, resolution: int) -> np.ndarray:
    """One image as uint8 (3, H, W) at ``resolution``.

    A larger square image is downscaled with Lanczos by :func:`acneops.data.decode.read_rgb`, so the GAN can
    train below the restored resolution (NVIDIA's dataset_tool does the same); a smaller or non-square image,
    or a missing or unreadable file, is a StageError naming the file.
    """
    from acneops.data.decode import read_rgb

    fix = (f"the GAN trains at {resolution}x{resolution}: re-run `restore` at this resolution, fix "
           "train_gan.resolution, or replace the file")
    return np.asarray(read_rgb(path, resolution, fix=fix), dtype=np.uint8).transpose(2, 0, 1).copy()


class ImageBank:
    """The training images as uint8 tensors (N, 3, H, W), held in memory when they fit in CACHE_BYTES;
    ``classes`` (N,) int64: each image's class index (conditional training), None without classes."""

    def __init__(self, files: Sequence[Path], resolution: int, cache_bytes: int = CACHE_BYTES,
                 classes: Sequence[int] | None = None):
        import torch

        self.files = list(files)
        self.resolution = resolution
        self.classes = None if classes is None else torch.as_tensor(list(classes), dtype=torch.int64)
        if self.classes is not None and len(self.classes) != len(self.files):
            raise ValueError(f"ImageBank: {len(self.classes)} classes for {len(self.files)} files")
        self._cache = None
        if len(self.files) * 3 * resolution * resolution <= cache_bytes:
            self._cache = torch.from_numpy(np.stack([read_image(f, resolution) for f in self.files]))

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, indices: "torch.Tensor") -> "torch.Tensor":
        """uint8 (B, 3, H, W) images at ``indices`` (int64 tensor)."""
        import torch

        if self._cache is not None:
            return self._cache[indices]
        return torch.from_numpy(np.stack([read_image(self.files[i], self.resolution) for i in indices.tolist()]))


def batch_indices(seed: int, step: int, batch: int, n: int) -> "torch.Tensor":
    """Indices (batch,) of the images of global minibatch ``step``: a pure function of its arguments.

    The stream is epoch by epoch: every image once per epoch, epochs shuffled by a torch.Generator
    seeded with ``seed * 1_000_003 + epoch`` (so batch ``step`` never depends on earlier draws).
    """
    import torch

    positions = torch.arange(step * batch, (step + 1) * batch, dtype=torch.int64)
    epochs, offsets = positions // n, positions % n
    out = torch.empty(batch, dtype=torch.int64)
    for epoch in torch.unique(epochs).tolist():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        mask = epochs == epoch
        out[mask] = perm[offsets[mask]]
    return out


def to_float(images: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """uint8 (B, C, H, W) -> float32 in [-1, 1] on ``device`` (the GANs' image range)."""
    import torch

    return images.to(device).to(torch.float32) / 127.5 - 1


def one_hot(classes: "torch.Tensor", c_dim: int) -> "torch.Tensor":
    """Class indices (B,) int64 -> c (B, c_dim) float32 one-hot (a conditional GAN's class input)."""
    import torch

    return torch.nn.functional.one_hot(classes, c_dim).to(torch.float32)


def to_uint8(images: "torch.Tensor") -> np.ndarray:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C), rounded and clipped as NVIDIA's exporters do."""
    import torch

    x = (images.detach().to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


