"""The one checkpoint format of acneops: GAN, classifier and SR-net checkpoints are all this dict.

A checkpoint is a plain dict saved with ``torch.save`` and read back with ``weights_only=True`` (tensors and
plain Python data only: no pickled modules, no code runs on load)::

    {'format': 'acneops-checkpoint/1',
     'kind': 'gan' | 'classifier' | 'sr',      # which package rebuilds it
     'family': str,                            # model family within the kind: 'stylegan2', 'resnet18', ...
     'model': state_dict (or {net: state_dict} for a GAN's G, D, G_ema),
     'model_args': dict,                       # constructor arguments: the file alone rebuilds the model
     'step': int,                              # optimiser steps (GAN minibatches, classifier epochs, SR steps)
     'config': dict,                           # the resolved config that trained it
     'optim': optimizer state, 'rng': RNG state, ...}   # optional: what an exact resume needs, metrics, ...

It is written to a temp file in the destination folder and moved into place with ``os.replace`` (a killed
process never leaves half a checkpoint under the final name). torch is imported inside the functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from acneops.core.errors import AcneopsError
from acneops.core.io import atomic_path, sha256_file

FORMAT = "acneops-checkpoint/1"
REQUIRED_KEYS = ("format", "kind", "family", "model", "model_args", "step", "config")
KINDS = {  # kind -> (name in messages, how a user makes a checkpoint of that kind)
    "gan": ("GAN", "train it first (`acneops run train_gan --name <run>`, or `dvc repro train_gan`)"),
    "classifier": ("classifier", "run `dvc repro train_classifier` first"),
    "sr": ("SR", "run `dvc repro restore` with restore.restorer: sr first"),
}


def _kind(kind: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; known kinds: {sorted(KINDS)}")
    return KINDS[kind]


def save_checkpoint(path: str | Path, kind: str, ckpt: dict[str, Any], required: Sequence[str] = ()) -> str:
    """Write ``ckpt`` (plus ``format`` and ``kind``) atomically and return the file's sha256.

    Every key of :data:`REQUIRED_KEYS` and of ``required`` (the kind's own) must be present: a checkpoint that
    could not rebuild its model is a bug, refused before anything is written.
    """
    import torch

    _kind(kind)
    ckpt = {**ckpt, "format": FORMAT, "kind": kind}
    missing = [k for k in (*REQUIRED_KEYS, *required) if k not in ckpt]
    if missing:
        raise ValueError(f"{kind} checkpoint dict lacks {missing}; it would not describe itself")
    with atomic_path(path) as tmp:
        # through a file handle: given a path, torch.save names the archive's records after the (random) temp file,
        # and the same checkpoint would get different bytes each time it is written
        with open(tmp, "wb") as fh:
            torch.save(ckpt, fh)
        digest = sha256_file(tmp)
    return digest


def load_checkpoint(path: str | Path, kind: str, required: Sequence[str] = (),
                    map_location: str = "cpu") -> dict[str, Any]:
    """Read a ``kind`` checkpoint written by :func:`save_checkpoint`.

    A missing, damaged, foreign, older-format or other-kind file is an AcneopsError naming the file, what was
    found and how to make the right file.
    """
    import torch

    name, fix = _kind(kind)
    path = Path(path)
    if not path.is_file():
        raise AcneopsError(f"{path}: {name} checkpoint not found; {fix}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, foreign or pickled-module files all land here
        raise AcneopsError(f"{path}: not a readable acneops checkpoint ({type(exc).__name__}: {exc}); the file "
                           f"is damaged or not a checkpoint: delete it and {fix}") from exc
    found = (ckpt.get("format"), ckpt.get("kind")) if isinstance(ckpt, dict) else (type(ckpt).__name__, None)
    if found != (FORMAT, kind):
        raise AcneopsError(f"{path}: not an acneops {name} checkpoint (format {found[0]!r}, kind {found[1]!r}; "
                           f"expected {FORMAT!r}, {kind!r}): a file of another kind, another tool or an older "
                           f"acneops; point the setting at a {name} checkpoint, or {fix}")
    missing = [k for k in (*REQUIRED_KEYS, *required) if k not in ckpt]
    if missing:
        raise AcneopsError(f"{path}: {name} checkpoint lacks {missing}; it was not written by "
                           f"acneops.core.checkpoint.save_checkpoint: {fix}")
    return ckpt
