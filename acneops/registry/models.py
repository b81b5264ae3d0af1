"""Log acneops checkpoints as MLflow pyfunc models into their training run, and find them again.

A logged model carries: the checkpoint as artifact ``checkpoint``; the acneops package as a code path (so
``mlflow models serve`` and ``mlflow.pyfunc.load_model`` need no checkout); pinned pip requirements (no inference:
it would import the model in a subprocess); a signature and a two-row input example. Classifier input examples are
drawn, never real images: nothing of a patient goes into the model store. Tags ``acneops.sha256`` (of the
checkpoint), ``acneops.kind`` and ``acneops.name`` let the `register` stage find the model of a checkpoint.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acneops.core.io import sha256_file

MODEL_NAME = "model"  # the logged model's name within its run
SHA_TAG = "acneops.sha256"
KIND_TAG = "acneops.kind"
NAME_TAG = "acneops.name"


def requirements() -> list[str]:
    """The pinned packages a loaded model imports (acneops itself ships as code)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "torchvision", "timm", "pillow", "numpy",
                                                  "pandas", "pyyaml")]


def _code_copy(tmp: Path) -> Path:
    """The acneops package without caches, to ship as the model's code path."""
    import acneops

    dest = tmp / "acneops"
    shutil.copytree(Path(acneops.__file__).parent, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def find_logged_model(client: Any, experiment_ids: list[str], sha256: str) -> Any | None:
    """The most recent READY logged model of the checkpoint with this sha256, or None."""
    found = client.search_logged_models(experiment_ids=experiment_ids,
                                        filter_string=f"tags.`{SHA_TAG}` = '{sha256}'", max_results=50)
    ready = [m for m in found if str(getattr(m.status, "name", m.status)).upper().endswith("READY")]
    return max(ready, key=lambda m: m.creation_timestamp) if ready else None


def log_model(run_id: str, checkpoint: Path, spec: tuple[type, Any, Any], kind: str, name: str,
              tags: dict[str, str] | None = None) -> Any:
    """Log ``checkpoint`` as a pyfunc model of run ``run_id``; return its ModelInfo (``model_uri`` =
    ``models:/<model id>``). ``spec``: (model class, input example, signature) of acneops.registry.generator_model /
    classifier_model ``spec(checkpoint)``. The run keeps its status."""
    import mlflow
    from mlflow import MlflowClient

    from acneops.tracking import tracking_uri

    model, example, signature = spec
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    status = client.get_run(run_id).info.status
    all_tags = {SHA_TAG: sha256_file(checkpoint), KIND_TAG: kind, NAME_TAG: name, **(tags or {})}
    with tempfile.TemporaryDirectory(prefix="acneops-model-") as tmp:
        code = _code_copy(Path(tmp))
        # models from code: the model is this small file (run at load time with the code path on sys.path), not a
        # pickled object, so loading a model executes acneops code only
        script = Path(tmp) / f"acneops_{kind}.py"
        script.write_text(f"import mlflow.models\nfrom {model.__module__} import {model.__name__}\n\n"
                          f"mlflow.models.set_model({model.__name__}())\n")
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(script),
                                           artifacts={"checkpoint": str(checkpoint)}, code_paths=[str(code)],
                                           input_example=example, signature=signature,
                                           pip_requirements=requirements(), tags=all_tags)
    if status == "RUNNING":  # leaving mlflow.start_run ended the run: the caller's block still holds it open
        client.update_run(run_id, status="RUNNING")
    return info


def ensure_logged(run_id: str, checkpoint: Path, spec: Callable[[Path], tuple[type, Any, Any]], kind: str, name: str,
                  tags: dict[str, str] | None = None) -> str:
    """The model URI of ``checkpoint``'s pyfunc model in run ``run_id``'s experiment, logging it into that run when
    no model of this checkpoint is there yet (a finished training re-run logs nothing twice)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from acneops.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    try:
        experiment = client.get_run(run_id).info.experiment_id
    except MlflowException:  # a finished training whose run lives in another store: register logs the model
        print(f"{kind} {name}: run {run_id} is not in {tracking_uri()}; the model is logged by `acneops run register`",
              file=sys.stderr)
        return ""
    found = find_logged_model(client, [experiment], sha256_file(checkpoint))
    if found is not None:
        return found.model_uri
    return log_model(run_id, checkpoint, spec(checkpoint), kind, name, tags).model_uri
