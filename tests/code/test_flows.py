"""The `pipeline` Prefect flow, run as a user runs it (`python flows/pipeline.py pipeline ...` in a fresh process, a
temporary Prefect server, a throwaway repository): it plans DVC's own stage graph (the mask task's too), ends with
the same dvc.lock output hashes as `dvc repro` on the thread runner and on a local 2-worker Dask cluster, leaves
`dvc status` clean, holds every stage's MLflow run under its parent run, runs independent stages side by side
within its cores, retries transient failures only, and prints no traceback when nothing failed."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pipeline_repo import copy_pipeline, dag_edges, exp_run_params, stage_names, tiny_params

ROOT = Path(__file__).resolve().parents[2]
# the tiny pipeline's stages up to a parallel group: data.dvc, ingest, restore, then the two classifiers side by side
TARGETS = ["train_classifier@sorter", "train_classifier@real"]
DASK_TARGETS = ["restore"]  # a small chain for the Dask cluster (its hashes checked against the same reference)
WALL_CLOCK = ("history.jsonl",)  # outs holding wall-clock seconds (a classifier's per-epoch time): never equal


def _env(folder: Path) -> dict[str, str]:
    """A user's environment for a run in ``folder``: the venv's bin first on PATH, an own MLflow store and Prefect
    home, Prefect's temporary server (no PREFECT_API_URL) with a start-up timeout for a busy 2-core box."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "PREFECT_HOME": str(folder / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    for key in ("PREFECT_API_URL", "ACNEOPS_PARENT_RUN_ID"):
        env.pop(key, None)
    return env


def _run(args: list[str], repo: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=repo, env=_env(repo.parent), capture_output=True, text=True, timeout=900)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


class Background:
    """A command started in ``repo`` now and waited for when its result is first needed (the reference and the
    Dask run go on while the thread-runner flow runs: the stages spend much of their time starting up)."""

    def __init__(self, args: list[str], repo: Path, check: bool = True):
        self.repo, self.args, self.check, self._done = repo, args, check, None
        self._proc = subprocess.Popen(args, cwd=repo, env=_env(repo.parent), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)

    def result(self) -> subprocess.CompletedProcess:
        if self._done is None:
            out, err = self._proc.communicate(timeout=900)
            self._done = subprocess.CompletedProcess(self.args, self._proc.returncode, out, err)
            assert self._done.returncode == 0 or not self.check, out[-3000:] + err[-3000:]
        return self._done


def _flow_args(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "flows" / "pipeline.py"), "pipeline", *args]


def _tiny_repo(folder: Path) -> Path:
    """The project's pipeline in a fresh git+DVC repository with tiny params and the phantom added to DVC."""
    params = tiny_params()
    params["train_classifier"]["seeds"] = [0]
    repo = copy_pipeline(folder / "repo", params, with_code=True)
    _run([sys.executable, "-m", "acneops", "data", "phantom", "data"], repo)
    _run([sys.executable, "-m", "dvc", "add", "-q", "data"], repo)
    return repo


def _lock_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {f"{stage}:{o['path']}": o["md5"] for stage, spec in lock.items() for o in spec.get("outs", [])}


def _assert_same_outputs(repo: Path, reference: Path) -> dict[str, str]:
    """dvc.lock's output hashes of ``repo`` equal the reference's for the stages ``repo`` ran; a wall-clock out
    equal but for its seconds. Returns ``repo``'s hashes."""
    import json

    hashes, expected = _lock_hashes(repo), _lock_hashes(reference)
    stages = {key.split(":")[0] for key in hashes}
    expected = {key: md5 for key, md5 in expected.items() if key.split(":")[0] in stages}
    clock = {key for key in expected if key.endswith(WALL_CLOCK)}
    assert set(hashes) == set(expected)
    assert {k: v for k, v in hashes.items() if k not in clock} == {k: v for k, v in expected.items() if k not in clock}
    for key in clock:
        path = key.split(":", 1)[1]
        a, b = ([{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in r.read_text().splitlines()]
                for r in (repo / path, reference / path))
        assert a == b, path
    return hashes


def _runs(repo: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo.parent / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("acneops").experiment_id])


def _output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Background:
    """`dvc repro` of TARGETS in a fresh copy: the hashes every flow run must end with."""
    repo = _tiny_repo(tmp_path_factory.mktemp("reference"))
    return Background([sys.executable, "-m", "dvc", "repro", *TARGETS], repo)


@pytest.fixture(scope="module")
def dask_run(tmp_path_factory) -> Background:
    pytest.importorskip("prefect_dask", reason="the extra acneops[dask]: pip install 'acneops[dask]'")
    repo = _tiny_repo(tmp_path_factory.mktemp("dask"))
    return Background(_flow_args(*DASK_TARGETS, "--dask", "local:2"), repo)


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, reference, dask_run, script_run) -> tuple[Path, subprocess.CompletedProcess]:
    """The flow on the thread runner, on 2 cores, while the reference, the Dask run and the script run go on."""
    repo = _tiny_repo(tmp_path_factory.mktemp("flow"))
    return repo, _run(_flow_args(*TARGETS, "--jobs", "2"), repo)


def test_flow_ends_with_dvc_repro_hashes_and_a_clean_dvc_status(reference, flow_run, monkeypatch):
    from acneops.flows.pipeline import plan

    repo, done = flow_run
    reference.result()
    hashes = _assert_same_outputs(repo, reference.repo)
    assert {"ingest:datasets/ingest", "restore:datasets/restored"} <= set(hashes)
    assert {key.split(":")[0] for key in hashes} == {"ingest", "restore", *TARGETS}
    status = _run([sys.executable, "-m", "dvc", "status", *TARGETS], repo)
    assert "up to date" in status.stdout, status.stdout
    monkeypatch.chdir(repo)
    assert plan(TARGETS, Path("params.yaml"), jobs=2) == ({}, {})  # a second flow run would start nothing


def test_flow_is_one_parent_run_holding_every_stage_run_and_runs_the_parallel_group_side_by_side(flow_run):
    repo, done = flow_run
    runs = {run.info.run_id: run for run in _runs(repo)}
    parent = min((run for run in runs.values() if run.data.tags["acneops.stage"] == "pipeline"),
                 key=lambda run: run.info.start_time)  # the first flow run (a test may run it again)
    assert parent.info.status == "FINISHED" and parent.data.tags["acneops.prefect_flow_run_id"]
    assert "stage_wall_s/train_classifier.real" in parent.data.metrics

    def top(run):
        while run.data.tags.get("mlflow.parentRunId") in runs:
            run = runs[run.data.tags["mlflow.parentRunId"]]
        return run

    stage_runs = [run for run in runs.values() if run.data.tags["acneops.stage"] != "pipeline"]
    assert {run.data.tags["acneops.stage"] for run in stage_runs} >= {"ingest", "restore", "train_classifier"}
    assert {top(run).info.run_id for run in stage_runs} == {parent.info.run_id}  # first run: every stage ran
    sorter, real = (next(r for r in stage_runs if r.info.run_name == f"train_classifier@{name}")
                    for name in ("sorter", "real"))
    assert max(sorter.info.start_time, real.info.start_time) < min(sorter.info.end_time, real.info.end_time)


def test_flow_on_a_local_two_worker_dask_cluster_matches_dvc_repro(reference, dask_run):
    repo, done = dask_run.repo, dask_run.result()
    reference.result()
    hashes = _assert_same_outputs(repo, reference.repo)
    assert {key.split(":")[0] for key in hashes} == {"ingest", "restore"}
    assert "up to date" in _run([sys.executable, "-m", "dvc", "status", *DASK_TARGETS], repo).stdout
    runs = _runs(repo)
    [parent] = [run for run in runs if run.data.tags["acneops.stage"] == "pipeline"]
    assert parent.data.params["dask"] == "local:2" and parent.info.status == "FINISHED"
    restore = [run for run in runs if run.data.tags["acneops.stage"] == "restore"]
    assert restore and {run.data.tags["mlflow.parentRunId"] for run in restore} == {parent.info.run_id}
    assert "Starting temporary server" in _output(done)
    assert _output(done).count("Starting temporary server") == 1  # the workers report to the flow's server


def test_a_flow_run_prints_no_traceback(flow_run, dask_run):
    for done in (flow_run[1], dask_run.result()):
        assert "Traceback" not in _output(done), _output(done)[-4000:]


# A repository of small script stages: three independent ones first (the only stages ready at the start), then one
# failing transiently once (exit status 75), one with the tracking server down (`acneops run` exits 75 every
# time), one on bad input (`acneops run` exits 1), and a stage downstream of the bad one.
WORKS = ["w_1.txt", "w_2.txt", "w_3.txt"]
SCRIPT_DVC_YAML = {"stages": {
    "work": {"foreach": [1, 2, 3], "do": {"cmd": "python work.py ${item}", "deps": ["work.py"],
                                          "outs": ["w_${item}.txt"]}},
    "flaky": {"cmd": "python flaky.py", "deps": ["flaky.py", *WORKS], "outs": ["flaky.txt"]},
    "offline": {"cmd": "MLFLOW_TRACKING_URI=http://127.0.0.1:9 acneops run ingest", "deps": WORKS,
                "outs": ["offline.txt"]},
    "bad": {"cmd": "acneops run ingest --params no_such_params.yaml", "deps": WORKS, "outs": ["bad.txt"]},
    "after_bad": {"cmd": "echo done > after.txt", "deps": ["bad.txt"], "outs": ["after.txt"]},
}}
WORK = """import sys, time
item = sys.argv[1]
began = time.time()
time.sleep(3.0)
open(f"../work_{item}.times", "w").write(f"{began} {time.time()}")
open(f"w_{item}.txt", "w").write(item)
"""
FLAKY = """import os, sys
if not os.path.exists("../flaky.tried"):
    open("../flaky.tried", "w").close()
    print("planted transient failure")
    sys.exit(75)
open("flaky.txt", "w").write("ok")
"""


@pytest.fixture(scope="module")
def script_run(tmp_path_factory) -> Background:
    """One flow run over the script stages (retry delay 0, one retry, 2 cores) in a fresh process."""
    repo = tmp_path_factory.mktemp("scripts") / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(yaml.safe_dump(SCRIPT_DVC_YAML))
    (repo / "work.py").write_text(WORK)
    (repo / "flaky.py").write_text(FLAKY)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from acneops.flows import pipeline
        try:
            pipeline.run(Path("params.yaml"), [], None, jobs=2, retries=1, retry_delay_s=0)
        except pipeline.PipelineError as exc:
            print(f"FLOW FAILED: {exc}")
            sys.exit(1)
        """)
    return Background([sys.executable, "-c", code], repo, check=False)


def test_only_transient_failures_are_retried_and_independent_stages_run_within_the_cores(script_run):
    """The flaky stage succeeds on its retry; the stage whose tracking server is down is tried twice and fails; the
    stage with bad input fails at once (one attempt in its log) and its downstream stage never starts; the three
    one-thread work stages run two at a time, never three; the flow exits non-zero naming both failures and their
    logs; its parent run is FAILED."""
    repo, done = script_run.repo, script_run.result()
    out = _output(done)
    assert done.returncode == 1 and "FLOW FAILED:" in out, out[-4000:]
    error = out.split("FLOW FAILED:")[1]
    logs = repo / ".dvc" / "tmp" / "repro"
    assert f"stage bad: its command exited with status 1 (log: {logs / 'bad.log'})" in error
    assert "no_such_params.yaml: params file not found" in error  # the log's tail: what to fix
    assert f"stage offline: its command exited with status 75 (attempt 2) (log: {logs / 'offline.log'})" in error
    assert "not run (upstream failed): after_bad" in error
    attempts = {name: (logs / f"{name}.log").read_text().count("--- attempt ") for name in ("bad", "offline", "flaky")}
    assert attempts == {"bad": 1, "offline": 2, "flaky": 2}
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in (logs / "offline.log").read_text()
    assert (repo / "flaky.txt").read_text() == "ok" and not (repo / "after.txt").exists()
    spans = [tuple(map(float, (repo.parent / f"work_{i}.times").read_text().split())) for i in (1, 2, 3)]
    at_once = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert at_once == 2  # two of the three started together, the third when a core was free (--jobs 2)
    locked = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert locked == {"work@1", "work@2", "work@3", "flaky"}  # DVC recorded every stage that finished
    [parent] = [run for run in _runs(repo) if run.data.tags["acneops.stage"] == "pipeline"]
    assert parent.info.status == "FAILED" and "stage bad" in parent.data.tags["acneops.failure"]


def test_acneops_run_exits_75_when_the_tracking_server_is_down_and_1_on_bad_input(tmp_path):
    env = {**_env(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    down = subprocess.run([sys.executable, "-m", "acneops", "run", "ingest"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 75 and "http://127.0.0.1:9 is unreachable" in down.stderr, down.stderr
    bad = subprocess.run([sys.executable, "-m", "acneops", "run", "ingest", "--params", "missing.yaml"],
                         cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "missing.yaml: params file not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_transient_means_a_broken_connection_a_timeout_or_an_io_error_never_bad_input():
    import errno

    from acneops.cli import transient
    from acneops.core.config import ConfigError
    from acneops.core.errors import StageError

    def raised_while_handling(cause: BaseException, exc: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException:
                raise exc
        except BaseException as caught:
            return caught

    assert transient(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert transient(TimeoutError("timed out")) and transient(OSError(errno.EIO, "Input/output error"))
    # MLflow's client raises its own exception while handling the connection error
    assert transient(raised_while_handling(ConnectionRefusedError(), RuntimeError("API request failed")))
    assert not transient(FileNotFoundError(errno.ENOENT, "no such file", "data/labels.csv"))
    assert not transient(PermissionError(errno.EACCES, "denied")) and not transient(ValueError("bug"))
    assert not transient(ConfigError("params.yaml: bad"))
    assert not transient(raised_while_handling(OSError(errno.EIO, "read"), StageError("image x.png is corrupt")))


def test_the_retry_condition_accepts_only_a_transient_stage_error_and_what_dask_sends_pickles():
    import cloudpickle
    from prefect.states import Completed, Failed

    from acneops.flows.pipeline import StageFailed, TransientStageError, pipeline_flow, retry_transient, stage_task

    transient = TransientStageError("train_gan@mild", 75, "/r/.dvc/tmp/repro/train_gan@mild.log", "tail", 2, 1.5, 1.0)
    bad = StageFailed("ingest", 1, "/r/.dvc/tmp/repro/ingest.log", "error: data/labels.csv: not found")
    assert retry_transient(None, None, Failed(data=transient))
    assert not retry_transient(None, None, Failed(data=bad))
    assert not retry_transient(None, None, Failed(data=ValueError("a bug")))
    assert not retry_transient(None, None, Completed(data=1))
    copy = pickle.loads(pickle.dumps(transient))  # a Dask worker sends it back to the flow
    assert type(copy) is TransientStageError and str(copy) == str(transient) and copy.seconds == 1.5
    assert "stage ingest: its command exited with status 1 (log: /r/.dvc/tmp/repro/ingest.log)" in str(bad)
    assert str(bad).endswith("error: data/labels.csv: not found")
    # Dask pickles the flow and the task by value (with the globals their functions name): nothing unpicklable
    for obj in (pipeline_flow.with_options(retries=0), stage_task.with_options(retries=1)):
        assert cloudpickle.loads(cloudpickle.dumps(obj)).name == obj.name


def test_dask_option_is_checked_and_a_missing_extra_names_the_install(monkeypatch):
    from acneops.core.errors import AcneopsError
    from acneops.flows.pipeline import task_runner

    for bad in ("local:0", "local:two", "scheduler:8786"):
        with pytest.raises(AcneopsError, match=r"--dask .*expected local:N"):
            task_runner(bad)
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # as if the extra were not installed
    with pytest.raises(AcneopsError, match=r"pip install 'acneops\[dask\]'"):
        task_runner("local:2")


def test_the_mask_task_plan_is_dvcs_stage_graph(tmp_path, monkeypatch):
    """No hand-kept list: for the mask task (params.yaml as `dvc exp run -S task=mask` writes it) the flow plans
    exactly `dvc stage list` and `dvc dag`, each stage with its thread count from params."""
    from acneops.flows.pipeline import plan
    from acneops.pipeline.threads import stage_threads

    repo = copy_pipeline(tmp_path)
    params = exp_run_params(repo, ["task=mask"])
    monkeypatch.chdir(repo)
    graph, threads = plan([], Path("params.yaml"), jobs=2)
    assert set(graph) == set(stage_names(repo)) and "train_gan@no_mask" in graph and "sort@all" not in graph
    assert {(up, stage) for stage, ups in graph.items() for up in ups} == dag_edges(repo)
    assert threads == {stage: min(2, stage_threads(params, stage, 2)) for stage in graph}
    part, _ = plan(["train_gan@mask"], Path("params.yaml"), jobs=2)
    assert part == {"ingest": set(), "restore": {"ingest"}, "train_gan@mask": {"restore"}}


def test_dvc_repro_dry_runs_the_hierarchy_in_order(tmp_path):
    """`dvc repro --dry` on a fresh checkout: data stages, base, G_all + sorter, then sort and the per-class
    fine-tunes of G_all, synthesize, the three scenarios, evaluate."""
    copy_pipeline(tmp_path)
    out = subprocess.run([sys.executable, "-m", "dvc", "repro", "--dry", "--force"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    order = [line.split("'")[1] for line in out.stdout.splitlines() if line.startswith("Running stage")]
    assert sorted(order) == sorted(set(stage_names()) - {"data.dvc"})
    pos = {name: i for i, name in enumerate(order)}
    chain = ["ingest", "restore", "train_gan@base", "train_gan@all", "train_gan@mild", "synthesize",
             "train_classifier@synthetic", "evaluate"]
    assert [pos[s] for s in chain] == sorted(pos[s] for s in chain)
    assert pos["train_classifier@sorter"] < pos["sort@all"] and pos["train_gan@all"] < pos["sort@all"]
    assert pos["train_gan@all"] < min(pos[f"train_gan@{s}"] for s in ("healthy", "mild", "moderate", "severe"))
    assert max(pos[f"train_gan@{s}"] for s in ("healthy", "mild", "moderate", "severe")) < pos["synthesize"]
    assert max(pos[f"train_classifier@{s}"] for s in ("synthetic", "real", "augmented")) < pos["evaluate"]
