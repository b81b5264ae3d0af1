"""MLflow tracking for every stage: one small module, one context manager.

Every stage that trains or measures something opens ``with start_run(stage, name, config) as run``
and logs through the returned :class:`Run`. The store is ``MLFLOW_TRACKING_URI`` or the embedded
default ``sqlite:///<absolute repo root>/mlflow.db`` (a relative sqlite URI would point into the
temporary copy under ``dvc exp run --temp`` and the run would be lost). Artifacts of the embedded
store go next to the database, in ``mlartifacts/``, for the same reason.

Run lifecycle (what a person reading the MLflow UI can rely on):
- one stage execution is one run: a stage whose training loop opens its own run (to log per epoch and to
  resume it) sets ``TRACKS_ITSELF`` so acneops.stages.run_stage does not open a second; opening a run of
  a stage and name this process already has open is an error, not a second run;
- a resumed training passes the ``run_id`` stored in its checkpoint and continues the same run;
- the run ends FINISHED on success and FAILED on an exception, Ctrl-C, SIGTERM or :meth:`Run.fail`;
- a run killed without a chance to clean up (SIGKILL, power loss) stays RUNNING until the next new
  (non-resume) run of the same stage and name starts, which marks it FAILED; a run whose process is
  still alive on this host (tags ``acneops.host``/``acneops.pid``) is left alone;
- with ``ACNEOPS_PARENT_RUN_ID`` set the run is nested under that run: :func:`parent_run` sets it for
  its block, so every ``acneops repro`` (the ``dvc repro`` wrapper) and every Prefect pipeline flow run
  is one parent run with its stage runs nested under it;
- every open (new or resumed) sets the lineage tags of acneops.tracking.lineage (git commit, data md5,
  config hash, sha256 of named inputs).

mlflow is imported inside the functions, so importing this module is free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acneops.core.config import flatten

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PARENT_RUN_ENV = "ACNEOPS_PARENT_RUN_ID"
STAGE_TAG = "acneops.stage"
NAME_TAG = "acneops.name"
PARENT_TAG = "mlflow.parentRunId"
HOST_TAG = "acneops.host"  # hostname of the process that holds the run open
PID_TAG = "acneops.pid"  # its process id (a live process's RUNNING run is never marked killed)
MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value

_OPEN: dict[tuple[str, str], str] = {}  # (stage, name) -> id of the run this process holds open
_OPEN_LOCK = threading.Lock()


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding dvc.yaml or .git, else ``start``."""
    start = Path(start or os.getcwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".git").exists():
            return folder
    return start


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute sqlite URI at the repository root."""
    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    if uri:
        return uri
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def _artifact_location(uri: str) -> str | None:
    """Where a new experiment of a local sqlite store keeps artifacts: ``mlartifacts/`` beside the db."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.is_absolute():
            return (db.parent / "mlartifacts").as_uri()
    return None  # a tracking server (or file store) decides


def param_strings(config: dict[str, Any]) -> dict[str, str]:
    """Nested dict -> ``{'a.b': 'value'}`` with string values (MLflow params are strings of bounded length)."""
    return {name: str(value)[:MAX_PARAM_CHARS] for name, value in flatten(config).items()}


class Run:
    """A thin handle on one MLflow run (client API: no global active run, safe to nest)."""

    def __init__(self, client: Any, run_id: str):
        self._client = client
        self.run_id = run_id
        self.failure: str | None = None  # set by fail(): the run ends FAILED without an exception

    def fail(self, reason: str) -> None:
        """End the run FAILED when its block exits (for an outcome that is not an exception, such as a
        subprocess's non-zero exit status); ``reason`` goes to tag ``acneops.failure``."""
        self.failure = reason
        self.set_tags({"acneops.failure": reason})

    def log_params(self, params: dict[str, Any]) -> None:
        """Log (nested) params. On a resumed run a key already logged with another value cannot be
        overwritten (MLflow params are immutable): the new value is recorded as tag ``resume.<key>``."""
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        flat = param_strings(params)
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        changed = {f"resume.{k}": v for k, v in flat.items() if k in existing and existing[k] != v}
        for start in range(0, len(new), 100):  # MLflow accepts at most 100 params per batch
            self._client.log_batch(self.run_id, params=new[start:start + 100])
        if changed:
            self.set_tags(changed)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log numeric metrics at integer ``step`` in one batch."""
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        batch = [Metric(k, float(v), now_ms, int(step)) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self._client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy the file (or folder) ``path`` into the run's artifacts."""
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_dataset(self, folder: str | Path, name: str, context: str) -> None:
        """Record the image folder a run read as an MLflow input (the run page's Datasets): its ``manifest.csv`` (one
        row per image with its hash), or for a folder without one each ``*.png`` with its sha256, so the digest
        changes with any image; ``context`` is training, validation, evaluation, ..."""
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        from acneops.core.io import sha256_file

        folder = Path(folder)
        if (folder / "manifest.csv").is_file():
            frame = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)
        else:
            files = sorted(folder.glob("*.png"))
            frame = pd.DataFrame({"file": [f.name for f in files], "sha256": [sha256_file(f) for f in files]})
        dataset = mlflow.data.from_pandas(frame, source=str(folder.resolve()), name=name)
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])


class NullRun(Run):
    """Stands in for a run where nothing must be logged (ranks > 0 of a distributed training)."""

    def __init__(self) -> None:
        super().__init__(client=None, run_id="")

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def fail(self, reason: str) -> None:
        self.failure = reason

    def log_dataset(self, folder: str | Path, name: str, context: str) -> None:
        pass


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold a file lock beside a local sqlite store while a process opens it: MLflow creates and migrates the
    database on first use, and two stages starting at once on a fresh store would both run the migration
    (``table _alembic_tmp_tags already exists``). Other stores need no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=300):
        yield


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3's UI opens a model-training experiment on its runs table
EXPERIMENT_KIND = "custom_model_development"  # (an untagged one opens on the GenAI traces overview)


def _experiment_id(client: Any, uri: str, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            created = client.create_experiment(experiment, artifact_location=_artifact_location(uri),
                                               tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            return created
        except Exception:  # another process created it between the two calls
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
    if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # an experiment made before acneops set the kind
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return found.experiment_id


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail within ``timeout`` seconds, naming ``uri``, when an http(s) tracking server does not answer (MLflow's own
    client would retry with back-off for minutes). Other stores (sqlite, files) need no check."""
    import urllib.error
    import urllib.request

    from acneops.core.errors import AcneopsError

    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered (a proxy or an older server without /health): reachable
    except (OSError, ValueError) as exc:
        raise AcneopsError(f"MLflow tracking server {uri} is unreachable ({exc}); start it (`mlflow server ...`), "
                           f"fix {TRACKING_URI_ENV}, or unset it to use the embedded sqlite store") from None


def _process_alive(tags: dict[str, str]) -> bool:
    """True when the run's tags name a process on this host that still exists (unknown: False)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    try:
        os.kill(int(tags[PID_TAG]), 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def fail_stale_runs(client: Any, experiment_id: str, stage: str, name: str | None) -> list[str]:
    """Mark FAILED every run of ``stage``/``name`` still RUNNING whose process is gone (killed without
    cleaning up); return their ids. A run held by a live process on this host is left RUNNING."""
    filter_string = (
        f"tags.`{STAGE_TAG}` = '{stage}' and tags.`{NAME_TAG}` = '{name or ''}' "
        "and attributes.status = 'RUNNING'"
    )
    running = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000)
    stale = [run for run in running if not _process_alive(run.data.tags)]
    for run in stale:
        client.set_tag(run.info.run_id, "acneops.failure", "left RUNNING by a killed process")
        client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in stale]


def _open_run(client: Any, experiment_id: str, stage: str, name: str | None,
              run_id: str | None, tags: dict[str, Any]) -> tuple[str, bool]:
    """Resume ``run_id`` if it exists in this store, else create a new run. Returns (run_id, resumed)."""
    from mlflow.exceptions import MlflowException

    if run_id:
        try:
            client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            return run_id, True
        except MlflowException:
            tags = {**tags, "acneops.resume_missing_run": run_id}  # store changed: start afresh, say so
    fail_stale_runs(client, experiment_id, stage, name)
    all_tags = {STAGE_TAG: stage, NAME_TAG: name or "", **_process_tags(), **tags}
    parent = os.environ.get(PARENT_RUN_ENV, "").strip()
    if parent:
        all_tags[PARENT_TAG] = parent
    run_name = f"{stage}@{name}" if name else stage
    run = client.create_run(experiment_id, tags={k: str(v) for k, v in all_tags.items()}, run_name=run_name)
    return run.info.run_id, False


def _process_tags() -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


@contextlib.contextmanager
def _held(stage: str, name: str | None) -> Iterator[None]:
    """Register (stage, name) as open in this process for the block; a second open is a bug, not a run."""
    key = (stage, name or "")
    with _OPEN_LOCK:
        if key in _OPEN:
            label = f"{stage}@{name}" if name else stage
            raise RuntimeError(
                f"an MLflow run of {label} (id {_OPEN[key] or 'being created'}) is already open in this process; "
                "a stage whose code opens its own run must set TRACKS_ITSELF = True so that "
                "acneops.stages.run_stage does not open another")
        _OPEN[key] = ""
    try:
        yield
    finally:
        with _OPEN_LOCK:
            _OPEN.pop(key, None)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit inside the block (main thread only) so the run is marked FAILED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def start_run(
    stage: str,
    name: str | None,
    config: dict[str, Any],
    run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    experiment: str = "acneops",
) -> Iterator[Run]:
    """Open (or resume) the MLflow run of one stage execution and log ``config`` as its params.

    Ends FINISHED when the block completes, FAILED when it raises (including KeyboardInterrupt and
    SIGTERM, which is turned into SystemExit while the block runs) or called ``run.fail(reason)``.
    A resumed run keeps its id. Opening a second run of the same stage and name while this one is open
    (in this process) raises RuntimeError.
    """
    from mlflow import MlflowClient

    uri = tracking_uri()
    check_reachable(uri)
    with _held(stage, name):
        with _store_lock(uri):  # the first use opens (on a fresh store: creates and migrates) the database
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, uri, experiment)
        opened_id, resumed = _open_run(client, experiment_id, stage, name, run_id, dict(tags or {}))
        _OPEN[(stage, name or "")] = opened_id
        run = Run(client, opened_id)
        status = "FAILED"
        try:
            with _sigterm_as_exit():
                from acneops.tracking.lineage import lineage_tags

                run.set_tags({"acneops.resumed": resumed, **_process_tags(),
                              **lineage_tags(repo_root(), stage, name, config)})
                run.log_params(config)
                yield run
            status = "FAILED" if run.failure else "FINISHED"
        finally:
            client.set_terminated(opened_id, status=status)


@contextlib.contextmanager
def parent_run(run: Run) -> Iterator[str]:
    """Nest every run opened in the block, and in processes started from it, under ``run``: sets
    ``ACNEOPS_PARENT_RUN_ID`` in this process's environment (inherited by subprocesses such as ``dvc repro``
    and its stages) and restores the previous value afterwards. Yields the parent's run id."""
    previous = os.environ.get(PARENT_RUN_ENV)
    os.environ[PARENT_RUN_ENV] = run.run_id
    try:
        yield run.run_id
    finally:
        if previous is None:
            os.environ.pop(PARENT_RUN_ENV, None)
        else:
            os.environ[PARENT_RUN_ENV] = previous
