"""`restore` stage: every ingested image at the GAN resolution, as a metadata-free PNG.

For each row of ``datasets/ingest/manifest.csv``: decode (JPEG draft mode when the file is much
larger than needed), apply EXIF orientation, convert to RGB, take the centred square (phantom and
ACNE04 faces are centred; FFHQ alignment below is the option for a generator pretrained on FFHQ), then
shrink with an antialiasing Lanczos filter, or enlarge small images with the configured restorer:

- ``lanczos``: Lanczos interpolation;
- ``sr``: a small residual CNN (acneops/data/sr.py) trained self-supervised on the high-resolution
  TRAIN images (shrink -> restore pairs).

Both restorers are measured (PSNR/SSIM) on held-out high-resolution train images that the SR net
never saw, so the choice is a measured one (``reports/restore.json``). Output per split:
``datasets/restored/<split>/images/<id>.png`` and ``manifest.csv`` (the columns
``acneops.data.access.load_split`` reads). ``<id>`` is the first 16 hex digits of the original
file's sha256: no patient name in a file name survives. Each split folder is built in a temporary
folder and renamed into place, so a killed run never leaves half a split.

FFHQ alignment (``align``; acneops.faces.align, needs ``acneops[faces]``) replaces the centre square by the
face crop an FFHQ StyleGAN expects. ``auto`` turns it on when ``base_generator`` is an NVIDIA import (a checkpoint
written by ``acneops gan import-nvlabs``: its ``source`` records ``kind: nvlabs``), the case where the GAN
hierarchy starts from FFHQ weights; the built-in phantom has no faces and keeps it off. With alignment on, a
photo without a detectable face is quarantined (``quarantined`` in the report, never a centre crop) and
``<split>/align.csv`` records each face's detector score and crop quad. A face smaller than the resolution is
cropped at its own size and enlarged by the restorer, like a small image. ``base_generator`` is a params
dependency only: DVC cannot list a file dependency that is empty by default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.core.config import build, section
from acneops.core.errors import StageError
from acneops.core.io import write_json
from acneops.data.restore import RestoreConfig, restore_dataset


def config_from_params(params: dict[str, Any], name: str | None = None) -> RestoreConfig:
    """Build the config from the ``restore`` section of params.yaml (``name`` is unused: no foreach)."""
    return build(RestoreConfig, section(params, "restore"), "restore")


def _is_nvlabs_import(path: Path) -> tuple[bool, str]:
    """(whether the GAN checkpoint at ``path`` was imported from NVIDIA's weights, where it came from).

    Reads the ``source`` record ``acneops gan import-nvlabs`` writes (``kind: nvlabs``) through the one checkpoint
    reader of acneops.core, not acneops.gan's importer: restore's code (and its DVC deps) stays free of GAN code.
    """
    from acneops.core.checkpoint import load_checkpoint

    if not path.is_file():
        raise StageError(f"restore.base_generator: {path} not found; import the NVIDIA generator first "
                         "(`acneops gan import-nvlabs`) or set restore.base_generator: \"\" (no base generator)")
    source = load_checkpoint(path, "gan").get("source")
    source = source if isinstance(source, dict) else {}
    if source.get("kind") != "nvlabs":
        return False, "trained by acneops"
    return True, f"from {source.get('pickle_name') or 'an NVIDIA pickle'}"


def align_decision(cfg: RestoreConfig) -> tuple[bool, str]:
    """(whether restore aligns faces, why): ``align`` true/false as given; ``auto`` = on exactly when
    ``base_generator`` is an NVIDIA import (a generator pretrained on FFHQ's aligned faces)."""
    if isinstance(cfg.align, bool):
        return cfg.align, f"restore.align: {str(cfg.align).lower()}"
    if not cfg.base_generator:
        return False, "restore.align: auto, no base_generator"
    nvlabs, detail = _is_nvlabs_import(Path(cfg.base_generator))
    kind = "an NVIDIA import" if nvlabs else "not an NVIDIA import"
    return nvlabs, f"restore.align: auto, base_generator {cfg.base_generator} is {kind} ({detail})"


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    out_dir: Path  # datasets/restored
    report_path: Path  # reports/restore.json
    counts: dict[str, dict[str, int]]  # split -> {downscaled, upscaled, kept(, quarantined when aligned)}
    comparison: dict[str, Any]  # lanczos/sr PSNR/SSIM, or {'skipped': reason}
    aligned: bool = False  # faces FFHQ-aligned (else centre squares)
    align_reason: str = ""  # why alignment is on or off (align_decision)
    quarantined: tuple[dict[str, str], ...] = ()  # {id, split, class, reason} of images without a face

    def summary(self) -> str:
        total = {s: sum(v for k, v in c.items() if k != "quarantined") for s, c in self.counts.items()}
        cmp = self.comparison
        if "sr" in cmp:
            m = f"lanczos {cmp['lanczos']['psnr']:.2f} dB / {cmp['lanczos']['ssim']:.4f}, " \
                f"sr {cmp['sr']['psnr']:.2f} dB / {cmp['sr']['ssim']:.4f}"
        else:
            m = f"comparison skipped ({cmp.get('skipped')})"
        faces = (f"; faces aligned ({self.align_reason}), {len(self.quarantined)} quarantined without a face"
                 if self.aligned else "")
        return f"restore: {total} images -> {self.out_dir}{faces}; {m}; report {self.report_path}"


def run(cfg: RestoreConfig) -> RestoreResult:
    """Restore every ingested image to ``resolution``; write split folders, sr checkpoint and report.

    The report gains ``align`` and ``quarantined`` only when alignment is on: with it off, every output is the
    same, byte for byte, as before alignment existed.
    """
    aligned, reason = align_decision(cfg)
    counts, comparison, quarantined = restore_dataset(cfg, align=aligned)
    report: dict[str, Any] = {"resolution": cfg.resolution, "restorer": cfg.restorer, "images": counts,
                              "comparison": comparison}
    if aligned:
        report["align"] = {"enabled": True, "reason": reason, "recipe": "ffhq", "detect_size": cfg.align_detect_size,
                           "upsample": cfg.align_upsample, "quarantined": len(quarantined)}
        report["quarantined"] = quarantined
    write_json(cfg.report_path, report)
    return RestoreResult(cfg.out_dir, cfg.report_path, counts, comparison, aligned, reason, tuple(quarantined))
