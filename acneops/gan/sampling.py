"""Generation API shared by every stage that samples a trained generator.

``generate(checkpoint, seeds)`` returns uint8 images (N, H, W, 3). Image ``i`` is a function of
``seeds[i]`` (its z is ``np.random.RandomState(seed).randn(z_dim)``, as NVIDIA's gen_images.py
draws it), psi and noise_mode, not of the other seeds: with ``noise_mode='const'`` (the default) the
per-layer noise is the generator's fixed buffers; with ``'random'`` each image's noise comes from
the torch RNG seeded with its own seed (on a forked RNG, the caller's state is untouched).

Class-conditional checkpoints (G's model_args carry c_dim and the class names ``labels``) take
``label=<class name>``: every image of the call gets that class's one-hot c, so image ``i`` depends
on seeds[i] and the label only. :func:`checkpoint_labels` tells a stage which kind it holds.

Bit-exactness: the same call gives the same bytes on the same machine. Generating the same seed in
a batch of another size can move a rare pixel by one grey level: the BLAS library picks its GEMM
kernel by matrix shape, so the mapping and style affine layers round differently for other batch
sizes (the grouped convolutions do not); per-image generation would avoid that at 3-4x the cost.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from acneops.core.errors import AcneopsError

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch


def latents(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """z (N, z_dim) float32, one row per seed from np.random.RandomState(seed)."""
    return np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds]).astype(np.float32)


def _check(family: str, psi: float, noise_mode: str) -> None:
    if noise_mode not in ("const", "random", "none"):
        raise AcneopsError(f"noise_mode must be const, random or none, got {noise_mode!r}")
    if family == "dcgan" and (psi != 1.0 or noise_mode != "const"):
        raise AcneopsError(f"a DCGAN generator has no truncation or noise inputs: use psi=1.0 and "
                           f"noise_mode='const' (got psi={psi}, noise_mode={noise_mode!r})")


def _run(G: "torch.nn.Module", family: str, z: "torch.Tensor", c: "torch.Tensor | None", psi: float,
         noise_mode: str, noise_seed: int | None) -> "torch.Tensor":
    """One batch of images (B, C, H, W) of classes c (None: unconditional); ``noise_seed`` seeds the noise of
    noise_mode='random' on a forked RNG, so the caller's random state is untouched."""
    import torch

    if family == "dcgan":
        return G(z)
    if noise_seed is None:
        return G(z, c, truncation_psi=psi, noise_mode=noise_mode)
    devices = [z.device] if z.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(noise_seed)
        return G(z, c, truncation_psi=psi, noise_mode=noise_mode)


def class_index(labels: Sequence[str], label: str | None, where: str) -> int | None:
    """Column of class ``label`` in c for a generator over ``labels`` (empty = unconditional: None).

    A conditional generator needs one of its classes, an unconditional one takes none: otherwise an
    AcneopsError naming ``where`` (the checkpoint) and the valid choices.
    """
    if not labels:
        if label is not None:
            raise AcneopsError(f"{where} is an unconditional generator (one class per generator): it takes no "
                               f"label, got label={label!r}; drop label or use a conditional checkpoint")
        return None
    if label not in labels:
        got = "no label" if label is None else f"label={label!r}"
        raise AcneopsError(f"{where} is class-conditional over {list(labels)}: pass label=<one of them> "
                           f"(got {got})")
    return list(labels).index(label)


def synthesize(G: "torch.nn.Module", family: str, seeds: Sequence[int], psi: float = 1.0,
               noise_mode: str = "const", batch: int = 32, device: str = "cpu", desc: str | None = None,
               label: str | None = None, where: str = "this generator") -> np.ndarray:
    """uint8 images (N, H, W, 3) of an in-memory generator (also used for the training grids).

    ``desc`` (the stage and class): a progress bar over the images on stderr; None: no bar.
    ``label``: the class of every image, required by a conditional generator and refused by an
    unconditional one (an error naming ``where`` and the generator's classes).
    """
    import torch

    from acneops.core.progress import progress
    from acneops.gan.bank import one_hot, to_uint8

    _check(family, psi, noise_mode)
    k = class_index(getattr(G, "labels", ()), label, where)
    z_all = torch.from_numpy(latents(seeds, G.z_dim)) if seeds else None
    per_image = noise_mode == "random"  # each image gets its own noise stream, so one at a time
    step = 1 if per_image else batch
    out = []
    with torch.inference_mode(), progress(total=len(seeds), desc=desc or "generate", unit="img", leave=False,
                                          disable=desc is None) as bar:
        for start in range(0, len(seeds), step):
            z = z_all[start:start + step].to(device)
            c = None if k is None else one_hot(torch.full([len(z)], k, dtype=torch.int64), G.c_dim).to(device)
            img = _run(G, family, z, c, psi, noise_mode, seeds[start] if per_image else None)
            out.append(to_uint8(img))
            bar.update(len(z))
    if not out:
        res = G.img_resolution if hasattr(G, "img_resolution") else 0
        return np.zeros((0, res, res, 3), dtype=np.uint8)
    return np.concatenate(out)


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, device: str) -> tuple["torch.nn.Module", str]:
    from acneops.gan import checkpoint

    ckpt = checkpoint.load(path)
    return checkpoint.build_generator(ckpt).to(device), ckpt["family"]


def load_generator(path: str | Path, device: str = "cpu") -> tuple["torch.nn.Module", str]:
    """(G_ema in eval mode, family) of a checkpoint (a path, or a model URI such as
    ``models:/acneops-generator-mild@champion``); cached per (file, modification time, device)."""
    from acneops.gan import checkpoint
    from acneops.tracking.model_uri import resolve_checkpoint

    path = resolve_checkpoint(path).resolve()
    if not path.is_file():
        checkpoint.load(path)  # raises the standard 'checkpoint not found' error
    return _cached(str(path), path.stat().st_mtime_ns, device)


def generate(checkpoint: str | Path, seeds: Iterable[int], psi: float = 1.0, batch: int = 32,
             noise_mode: str = "const", device: str = "cpu", desc: str | None = None,
             label: str | None = None) -> np.ndarray:
    """uint8 images (N, H, W, 3) from the G_ema of ``checkpoint``, one per seed, ``batch`` at a time.

    ``desc`` (the stage and class, e.g. ``"sort: generate"``): a progress bar on stderr; None: no bar.
    ``label``: the class to generate, one of :func:`checkpoint_labels` for a conditional checkpoint
    (required there), None for an unconditional one (a label is an error there).
    """
    seeds = [int(s) for s in seeds]
    if batch < 1:
        raise AcneopsError(f"generate: batch must be >= 1, got {batch}")
    G, family = load_generator(checkpoint, device)
    return synthesize(G, family, seeds, psi=psi, noise_mode=noise_mode, batch=batch, device=device, desc=desc,
                      label=label, where=f"checkpoint {checkpoint}")


def checkpoint_labels(path: str | Path) -> tuple[str, ...] | None:
    """The ordered class names of a class-conditional checkpoint (what ``generate(label=...)`` accepts),
    None for an unconditional one."""
    G, _ = load_generator(path)
    return tuple(G.labels) if getattr(G, "c_dim", 0) else None


def save_images(images: np.ndarray, out_dir: str | Path, names: Sequence[str]) -> list[str]:
    """Write uint8 images (N, H, W, 3) as metadata-free PNGs ``out_dir/<name>``; returns their sha256s."""
    from PIL import Image

    from acneops.core.io import save_png

    if len(images) != len(names):
        raise AcneopsError(f"save_images: {len(images)} images but {len(names)} names")
    out_dir = Path(out_dir)
    return [save_png(out_dir / name, Image.fromarray(img, "RGB")) for img, name in zip(images, names)]
