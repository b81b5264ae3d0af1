"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data"): the named transform presets (this module, torch-free so configs validate without torch), the
differentiable pipeline and its p controller (:mod:`acneops.gan.ada.pipe`), the transforms
(:mod:`acneops.gan.ada.transforms`)."""

from __future__ import annotations

from acneops.core.errors import AcneopsError

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
# Named transform sets of the reference (its ``augpipe`` option); 'bgc' is the ADA paper's default.
AUGMENT_SPECS = {"blit": _BLIT, "geom": _GEOM, "color": _COLOR, "bg": {**_BLIT, **_GEOM},
                 "bgc": {**_BLIT, **_GEOM, **_COLOR}}


class AugmentSpecError(AcneopsError, ValueError):
    """An augment spec that names no preset and no known transform."""


def augment_kwargs(spec: str, where: str = "augment") -> dict[str, float]:
    """AugmentPipe kwargs (probability multipliers) of a preset name or an 'a+b+c' transform list."""
    names = tuple(AUGMENT_SPECS[spec]) if spec in AUGMENT_SPECS else tuple(
        n.strip() for n in spec.split("+") if n.strip())
    unknown = sorted(set(names) - set(AUGMENT_SPECS["bgc"]))
    if unknown or not names:
        raise AugmentSpecError(f"{where}: augment {spec!r} unknown {unknown}; use a preset {sorted(AUGMENT_SPECS)} "
                               f"or transforms from {list(AUGMENT_SPECS['bgc'])} joined by '+'")
    return {n: 1.0 for n in names}
