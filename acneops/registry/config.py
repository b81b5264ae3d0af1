"""params.yaml section ``register``: which checkpoints become registered model versions, and the promotion gates."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from acneops.core.config import require
from acneops.core.paths import REPORTS_DIR, classifier_checkpoint, gan_checkpoint

SECTION = "register"
CHAMPION = "champion"  # alias of the version users load (models:/<name>@champion)
CHALLENGER = "challenger"  # alias of the newest version that did not pass its gates


@dataclasses.dataclass(frozen=True)
class RegisterConfig:
    """One `register` run: every generator and classifier below becomes a version of its registered model
    (``<prefix>-generator-<class>``, ``<prefix>-classifier-<scenario>``), promoted to ``champion`` only through
    the gates. Figures compared with a champion are re-measured in this run, on the same real images with the
    same features (evaluate's settings: params section ``evaluate``), never read from an older run."""

    prefix: str = "acneops"  # registered model names start with it (a second task on one server: another prefix)
    task: str = "acne"  # tag `task` of every registered model
    # class -> generator checkpoint (or model URI); a conditional checkpoint serving several classes is registered
    # once per class
    generators: dict[str, Path] = dataclasses.field(
        default_factory=lambda: {c: gan_checkpoint(c) for c in ("healthy", "mild", "moderate", "severe")})
    # scenario -> classifier checkpoint
    classifiers: dict[str, Path] = dataclasses.field(
        default_factory=lambda: {s: classifier_checkpoint(s) for s in ("synthetic", "real", "augmented")})
    metrics_path: Path = REPORTS_DIR / "metrics.json"  # evaluate's figures: the anonymity audit per class, TSTR
    report_path: Path = REPORTS_DIR / "registry.json"  # every decision with its figures
    # absolute gates of a generator (its exported images' anonymity audit, per class, from evaluate)
    max_flagged: int = 0  # exported near copies of a real train image allowed
    max_identity_flagged: int = 0  # exported faces of a real train person allowed (identity audit, where it applies)
    max_membership_auc: float = 0.65  # membership-inference AUC (feature and pixel attacks); 0.5 = no leak
    min_ct: float = -3.0  # Meehan et al.'s C_T z-score (feature and pixel); strongly negative = data copying
    # relative gates of a generator against the champion, both measured now on the same reference
    fidelity_tolerance: float = 0.0  # class fidelity may fall by at most this (absolute share)
    fd_tolerance: float = 0.0  # Fréchet distance may rise by at most this fraction of the champion's
    # gates of a classifier: macro-F1 on the frozen real test split, candidate and champion scored now
    min_macro_f1_gain: float = 0.0  # the candidate's macro-F1 must beat the champion's by more than this
    require_significant: bool = False  # also the 95% paired bootstrap interval of the difference above 0
    bootstrap: int = 2000  # resamples of the test images for that interval
    seed: int = 0  # bootstrap seed
    measure: Any = None  # evaluate's config (params section evaluate + audit): how generators and classifiers are measured

    def __post_init__(self) -> None:
        where = f"params.yaml [{SECTION}]"
        require(bool(self.prefix) and all(ch.isalnum() or ch in "-_." for ch in self.prefix),
                f"{where}.prefix: letters, digits, '-', '_' or '.', got {self.prefix!r}")
        require(self.max_flagged >= 0, f"{where}.max_flagged: must be >= 0")
        require(self.max_identity_flagged >= 0, f"{where}.max_identity_flagged: must be >= 0")
        require(0.5 <= self.max_membership_auc <= 1, f"{where}.max_membership_auc: must be in [0.5, 1]")
        require(self.fidelity_tolerance >= 0 and self.fd_tolerance >= 0,
                f"{where}: fidelity_tolerance and fd_tolerance must be >= 0")
        require(self.bootstrap >= 1, f"{where}.bootstrap: must be >= 1")
        require(bool(self.generators) or bool(self.classifiers), f"{where}: nothing to register")

    def model_name(self, kind: str, key: str) -> str:
        return f"{self.prefix}-{kind}-{key}"
