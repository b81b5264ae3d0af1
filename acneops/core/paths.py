"""The default layout (DESIGN.md 'Default layout'): where each stage reads and writes unless params.yaml
says otherwise. Config defaults, the CLI and the stages name these instead of spelling the paths again;
params.yaml and dvc.yaml (which cannot import Python) spell the same paths, and
tests/code/test_config_defaults.py keeps the config defaults equal to params.yaml. Nothing is created here.
"""

from pathlib import Path

DATA_DIR = Path("data")  # raw input, tracked by data.dvc
DATASETS_DIR = Path("datasets")  # derived datasets: ingest, restored, sorted, synthetic
MODELS_DIR = Path("models")  # checkpoints
REPORTS_DIR = Path("reports")  # metrics JSON, plots, report.md

LABELS_FILE = "labels.csv"  # raw layout: data/labels.csv + data/images/*
IMAGES_SUBDIR = "images"

INGEST_DIR = DATASETS_DIR / "ingest"  # validated, split manifest + contract.json
RESTORED_DIR = DATASETS_DIR / "restored"  # <split>/images/*.png + <split>/manifest.csv at GAN resolution
SORTED_DIR = DATASETS_DIR / "sorted"  # generated images sorted by severity, one folder per class
SYNTHETIC_DIR = DATASETS_DIR / "synthetic"  # the exported synthetic dataset


def gan_dir(run: str) -> Path:
    """Output folder of ``train_gan@<run>`` (checkpoints, stats, sample grids)."""
    return MODELS_DIR / "gan" / run


def gan_checkpoint(run: str) -> Path:
    """The final generator checkpoint of ``train_gan@<run>``."""
    return gan_dir(run) / "final.pt"


def classifier_dir(run: str) -> Path:
    """Output folder of ``train_classifier@<run>``."""
    return MODELS_DIR / "classifier" / run


def classifier_checkpoint(run: str) -> Path:
    """The best-validation checkpoint of ``train_classifier@<run>``."""
    return classifier_dir(run) / "best.pt"
