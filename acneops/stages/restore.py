"""`restore` stage: every ingested image at the GAN resolution, as a metadata-free PNG.

For each row of ``datasets/ingest/manifest.csv``: decode (JPEG draft mode when the file is much
larger than needed), apply EXIF orientation, convert to RGB, take the centred square (phantom and
ACNE04 faces are centred, so a face detector is not needed for them), then shrink with an
antialiasing Lanczos filter, or enlarge small images with the configured restorer:

- ``lanczos``: Lanczos interpolation;
- ``sr``: a small residual CNN (acneops/data/sr.py) trained self-supervised on the high-resolution
  TRAIN images (shrink -> restore pairs).

Both restorers are measured (PSNR/SSIM) on held-out high-resolution train images that the SR net
never saw, so the choice is a measured one (``reports/restore.json``). Output per split:
``datasets/restored/<split>/images/<id>.png`` and ``manifest.csv`` (the columns
``acneops.data.access.load_split`` reads). ``<id>`` is the first 16 hex digits of the original
file's sha256: no patient name in a file name survives. Each split folder is built in a temporary
folder and renamed into place, so a killed run never leaves half a split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.core.config import build, section
from acneops.core.io import write_json
from acneops.data.restore import RestoreConfig, restore_dataset


def config_from_params(params: dict[str, Any], name: str | None = None) -> RestoreConfig:
    """Build the config from the ``restore`` section of params.yaml (``name`` is unused: no foreach)."""
    return build(RestoreConfig, section(params, "restore"), "restore")


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    out_dir: Path  # datasets/restored
    report_path: Path  # reports/restore.json
    counts: dict[str, dict[str, int]]  # split -> {downscaled, upscaled, kept}
    comparison: dict[str, Any]  # lanczos/sr PSNR/SSIM, or {'skipped': reason}

    def summary(self) -> str:
        total = {s: sum(c.values()) for s, c in self.counts.items()}
        cmp = self.comparison
        if "sr" in cmp:
            m = f"lanczos {cmp['lanczos']['psnr']:.2f} dB / {cmp['lanczos']['ssim']:.4f}, " \
                f"sr {cmp['sr']['psnr']:.2f} dB / {cmp['sr']['ssim']:.4f}"
        else:
            m = f"comparison skipped ({cmp.get('skipped')})"
        return f"restore: {total} images -> {self.out_dir}; {m}; report {self.report_path}"


def run(cfg: RestoreConfig) -> RestoreResult:
    """Restore every ingested image to ``resolution``; write split folders, sr checkpoint and report."""
    counts, comparison = restore_dataset(cfg)
    write_json(cfg.report_path, {"resolution": cfg.resolution, "restorer": cfg.restorer, "images": counts,
                                 "comparison": comparison})
    return RestoreResult(cfg.out_dir, cfg.report_path, counts, comparison)
