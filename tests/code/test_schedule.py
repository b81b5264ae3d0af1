"""The process scheduler behind `acneops repro --jobs N` (acneops.pipeline.schedule), on plain `sleep` processes:
a node starts only after the nodes it needs and only while the running nodes' costs (their threads) fit in ``jobs``
cores, the first failure stops new starts while running nodes finish, each process's CPU time is measured, and an
interrupted scheduler leaves no process behind, not even one that its processes started."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from acneops.pipeline.schedule import check_graph, downstream_counts, run_graph

# a -> (b, c, d) -> e: three nodes ready at once after a
GRAPH = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"a"}, "e": {"b", "c", "d"}}


class Recorder:
    """Starts each node as ``python -c`` sleeping ``seconds`` (or ``slow_s`` for node ``slow``) and exiting with
    ``codes.get(node, 0)``; records start and end times."""

    def __init__(self, seconds: float = 0.3, codes: dict[str, int] | None = None, slow_s: float = 1.5,
                 busy: tuple[str, ...] = ()):
        self.seconds, self.codes, self.slow_s, self.busy = seconds, codes or {}, slow_s, busy
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, node: str) -> subprocess.Popen:
        self.started[node] = time.monotonic()
        seconds = self.slow_s if node == "slow" else self.seconds
        wait = (f"end = time.process_time() + {seconds}\nwhile time.process_time() < end: pass" if node in self.busy
                else f"time.sleep({seconds})")  # a busy node keeps one core busy, a sleeping one none
        code = f"import sys, time\n{wait}\nsys.exit({self.codes.get(node, 0)})"
        self.procs[node] = subprocess.Popen([sys.executable, "-c", code])
        return self.procs[node]

    def end(self, node: str, status: int, seconds: float, cpu_seconds: float) -> None:
        self.ended[node] = time.monotonic()

    def most_at_once(self) -> int:
        return max(sum(self.started[m] <= self.started[n] < self.ended[m] for m in self.started) for n in self.started)


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_nodes_start_after_their_needs_and_at_most_jobs_at_once(jobs):
    rec = Recorder()
    out = run_graph(GRAPH, rec.start, jobs, on_end=rec.end)
    assert out.ok and sorted(out.finished) == sorted(GRAPH) and not out.not_run
    for node, needs in GRAPH.items():
        assert all(rec.ended[up] <= rec.started[node] for up in needs), node
    assert out.most_at_once == rec.most_at_once() == jobs  # b, c, d overlap as far as jobs allows
    assert out.finished[0] == "a" and out.finished[-1] == "e"


def test_a_node_starts_only_when_its_threads_fit_in_the_free_cores():
    """As `acneops repro` schedules stages by their thread counts: a two-thread node runs alone on two cores,
    one-thread nodes pair up, a cost above the cores is capped (it runs alone, never waits forever), and a node
    further down the order starts when it fits and the first ready one does not (backfill)."""
    graph = {"wide": set(), "a": {"wide"}, "b": {"wide"}, "huge": {"a", "b"}, "small": {"wide"}}
    rec = Recorder()
    out = run_graph(graph, rec.start, jobs=2, on_end=rec.end, cost={"wide": 2, "huge": 5})
    assert out.ok and out.most_cores == 2
    assert out.finished[0] == "wide" and sorted(out.finished) == sorted(graph)
    # a, b, small take one core each: two at a time, never beside wide or huge
    assert rec.most_at_once() == out.most_at_once == 2
    for big in ("wide", "huge"):
        assert not any(rec.started[n] < rec.ended[big] and rec.started[big] < rec.ended[n] for n in rec.started
                       if n != big), big
    out = run_graph({"two": set(), "one": set()}, rec.start, jobs=3, cost={"two": 2, "one": 1})
    assert out.most_at_once == 2 and out.most_cores == 3


def test_cpu_time_of_each_process_is_measured():
    """A node that keeps a core busy shows CPU time close to its wall time, a sleeping one close to none: the
    figures `acneops repro` prints as each stage's CPU utilisation."""
    rec = Recorder(seconds=1.0, busy=("busy",))
    out = run_graph({"busy": set(), "idle": set()}, rec.start, jobs=2, on_end=rec.end)
    assert out.ok
    assert 0.9 <= out.cpu_seconds["busy"] <= out.seconds["busy"] + 0.2
    assert out.cpu_seconds["idle"] < 0.5


def test_first_failure_stops_new_starts_and_running_nodes_finish():
    graph = {"a": set(), "slow": set(), "b": {"a"}, "after": {"b"}}
    rec = Recorder(codes={"a": 3})
    out = run_graph(graph, rec.start, jobs=2, on_end=rec.end)
    assert out.failed == {"a": 3} and not out.ok
    assert "slow" in out.finished  # was running when a failed: waited for, not killed
    assert sorted(out.not_run) == ["after", "b"] and set(rec.started) == {"a", "slow"}


def test_interrupted_scheduler_stops_its_processes_and_what_they_started(tmp_path):
    """As a DVC process runs its stage command as a child: the child (here a sleeping grandchild) is stopped too."""
    pid_file = tmp_path / "grandchild.pid"
    parent = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); sys.exit(p.wait())")
    procs = []

    def start(node: str) -> subprocess.Popen:
        if node == "c":
            deadline = time.monotonic() + 60
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt  # as Ctrl-C arriving while the scheduler starts the second node
        procs.append(subprocess.Popen([sys.executable, "-c", parent]))
        return procs[-1]

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_graph({"b": set(), "c": set()}, start, jobs=2)
    assert procs[0].poll() is not None and time.monotonic() - began < 40  # stopped, not waited out
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_priority_and_graph_errors():
    assert downstream_counts(check_graph(GRAPH)) == {"a": 4, "b": 1, "c": 1, "d": 1, "e": 0}
    rec = Recorder(seconds=0)
    out = run_graph({"leaf": set(), "root": set(), "mid": {"root"}, "top": {"mid"}}, rec.start, jobs=1)
    assert out.finished == ["root", "mid", "leaf", "top"]  # the node with most work behind it first
    with pytest.raises(ValueError, match="x needs y"):
        check_graph({"x": {"y"}})
    with pytest.raises(ValueError, match=r"cycle among \['p', 'q'\]"):
        check_graph({"p": {"q"}, "q": {"p"}, "r": set()})
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_graph(GRAPH, rec.start, jobs=0)
