"""GAN checkpoints (kind ``gan`` of the one format, :mod:`acneops.core.checkpoint`) and the RNG state they carry.

Written and read by :func:`acneops.core.checkpoint.save_checkpoint` / ``load_checkpoint``::

    {'format': 'acneops-checkpoint/1', 'kind': 'gan', 'family': 'stylegan2' | 'dcgan',
     'model': {'G': state_dict, 'D': state_dict, 'G_ema': state_dict},
     'model_args': {'G': kwargs, 'D': kwargs},       # rebuild with the family's constructors; a conditional
                                                     # G's carries c_dim and labels (class names, c's columns)
     'step': int, 'cur_nimg': int, 'config': resolved config dict,
     'optim': {'G': state_dict, 'D': state_dict}, 'augment': {'p': float, 'ctrl': dict} | None,
     'pl_mean': float, 'rng': {'torch', 'cuda', 'numpy', 'python'}, 'mlflow_run_id': str, ...}

:func:`build_generator` rebuilds G_ema from the file alone, which is all later stages need.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from acneops.core.checkpoint import (
    FORMAT as FORMAT,  # re-exported: GAN checkpoints use the one format
)
from acneops.core.checkpoint import load_checkpoint, save_checkpoint
from acneops.core.errors import AcneopsError

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

GAN_KEYS = ("cur_nimg",)  # required on top of the common keys
FAMILIES = ("stylegan2", "dcgan")
# model_args of the class conditioning (present only when c_dim > 0); transfer may change them
CONDITIONING_KEYS = {"G": ("c_dim", "labels"), "D": ("c_dim", "cmap_dim", "mapping_layers")}


def family_models(family: str) -> tuple[type, type]:
    """(Generator, Discriminator) classes of a model family, from that family's MODELS registry."""
    if family == "stylegan2":
        from acneops.gan import stylegan2 as module
    elif family == "dcgan":
        from acneops.gan import dcgan as module
    else:
        raise AcneopsError(f"unknown GAN family '{family}'; known families: {list(FAMILIES)}")
    return module.MODELS[family]


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (torch CPU and CUDA, numpy, python)."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNGs captured by :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save(path: str | Path, ckpt: dict[str, Any]) -> str:
    """Write a GAN checkpoint atomically and return the file's sha256."""
    return save_checkpoint(path, "gan", ckpt, required=GAN_KEYS)


def load(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Read a GAN checkpoint; anything else is an AcneopsError naming the file and the fix."""
    return load_checkpoint(path, "gan", required=GAN_KEYS, map_location=map_location)


def build_generator(ckpt: dict[str, Any], which: str = "G_ema") -> "torch.nn.Module":
    """Rebuild a generator (G_ema by default) from a loaded checkpoint, in eval mode, without grads."""
    G_cls, _ = family_models(ckpt["family"])
    G = G_cls(**ckpt["model_args"]["G"])
    G.load_state_dict(ckpt["model"][which])
    return G.eval().requires_grad_(False)


def check_same_architecture(base: dict[str, Any], family: str, model_args: dict[str, Any], where: str,
                            ignore: dict[str, tuple[str, ...]] | None = None) -> None:
    """A base checkpoint for transfer learning must match the network being trained exactly, apart from
    the model_args ``ignore[net]`` (e.g. CONDITIONING_KEYS)."""
    if base["family"] != family:
        raise AcneopsError(f"{where}: base checkpoint is family '{base['family']}', training '{family}'; "
                           "use a base of the same family")
    for net in ("G", "D"):
        ours, theirs = model_args[net], base["model_args"][net]
        keys = (set(ours) | set(theirs)) - set((ignore or {}).get(net, ()))
        diff = {k: (theirs.get(k), ours.get(k)) for k in keys if ours.get(k) != theirs.get(k)}
        if diff:
            detail = ", ".join(f"{k}: base {b!r} vs params {o!r}" for k, (b, o) in sorted(diff.items()))
            raise AcneopsError(f"{where}: base {net} architecture differs ({detail}); "
                               "set train_gan's network keys to the base's values")


def copy_matching(source: dict[str, "torch.Tensor"], module: "torch.nn.Module") -> tuple[list[str], list[str]]:
    """Copy the tensors of ``source`` (a state_dict) into ``module``'s parameters and buffers of the same name and
    shape (NVIDIA's misc.copy_params_and_buffers); returns (copied, fresh: entries left as initialised)."""
    import torch

    own = module.state_dict()
    copied = [k for k, v in own.items() if k in source and tuple(source[k].shape) == tuple(v.shape)]
    with torch.no_grad():
        for key in copied:
            own[key].copy_(source[key])
    return copied, [k for k in own if k not in copied]
