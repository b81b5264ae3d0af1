"""Repository-relative default locations (DESIGN.md 'Default layout'). Nothing is created at import."""

from pathlib import Path

DATA_DIR = Path("data")  # raw input, tracked by data.dvc
DATASETS_DIR = Path("datasets")  # derived datasets: ingest, restored, sorted, synthetic
MODELS_DIR = Path("models")  # checkpoints
REPORTS_DIR = Path("reports")  # metrics JSON, plots, report.md

LABELS_FILE = "labels.csv"  # raw layout: data/labels.csv + data/images/*
IMAGES_SUBDIR = "images"
