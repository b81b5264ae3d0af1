"""Checkpoints named by MLflow model URI: ``models:/acneops-generator-mild@champion`` (registry alias),
``models:/acneops-classifier-real/3`` (version) or ``models:/m-<id>`` (a logged model) wherever a checkpoint path
is accepted (params of synthesize, sort and evaluate; ``acneops.gan.sampling.generate`` and
``acneops.classify.backbones.load_classifier`` in Python).

The model is an acneops pyfunc model (acneops.registry.pyfunc): its artifact ``checkpoint`` is the acneops
checkpoint file. It is downloaded once per registered version (or logged model) into ``ACNEOPS_MODEL_CACHE``
(default ``~/.cache/acneops/models``), through a temporary folder renamed into place, and the local file is returned.
An alias is resolved on every call, so a newly promoted champion is picked up. mlflow is imported on use only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from acneops.core.errors import AcneopsError

PREFIXES = ("models:/", "runs:/")
CACHE_ENV = "ACNEOPS_MODEL_CACHE"
CHECKPOINT_ARTIFACT = "checkpoint"


def is_model_uri(ref: object) -> bool:
    """True for ``models:/...`` and ``runs:/...`` (also when a config turned the string into a Path)."""
    return isinstance(ref, (str, Path)) and str(ref).startswith(PREFIXES)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "acneops" / "models")


def _pinned(uri: str) -> str:
    """The URI with a registry alias replaced by the version it points at now (other URIs unchanged)."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    from mlflow import MlflowClient

    from acneops.tracking import tracking_uri

    name, alias = uri[len("models:/"):].split("@", 1)
    version = MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri()).get_model_version_by_alias(name, alias)
    return f"models:/{name}/{version.version}"


def _checkpoint_in(model_dir: Path, uri: str) -> Path:
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise AcneopsError(f"{uri}: not an MLflow model (no MLmodel file)")
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    artifact = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT) or {}
    if not artifact.get("path"):
        raise AcneopsError(f"{uri}: not an acneops model (its pyfunc flavor has no '{CHECKPOINT_ARTIFACT}' artifact); "
                           "register models with `acneops run register`")
    return model_dir / artifact["path"]


def resolve_checkpoint(ref: str | Path) -> Path:
    """A local checkpoint path for ``ref``: a path is returned as is, a model URI is downloaded (cached)."""
    if not is_model_uri(ref):
        return Path(ref)
    import mlflow
    from mlflow.exceptions import MlflowException

    from acneops.tracking import tracking_uri

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar line per file otherwise
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    uri = str(ref)
    try:
        pinned = _pinned(uri)
        folder = cache_root() / hashlib.sha256(pinned.encode()).hexdigest()[:24]
        if not (folder / "MLmodel").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=folder.parent))
            try:
                mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=str(tmp))
                try:
                    os.replace(tmp, folder)
                except OSError:  # another process finished the same download first
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except MlflowException as exc:
        raise AcneopsError(f"{uri}: cannot load this model from the MLflow tracking server "
                           f"{tracking_uri()}: {exc.message}") from None
    return _checkpoint_in(folder, uri)


def local_checkpoints(refs: dict[str, Path | str]) -> dict[str, Path]:
    """``refs`` (name -> checkpoint path or model URI) with every URI replaced by its downloaded checkpoint."""
    return {name: resolve_checkpoint(ref) for name, ref in refs.items()}
