"""Run the nodes of a dependency graph as processes on ``jobs`` CPU cores (a small ``make -j`` with weights).

Knows nothing of DVC or of acneops' stages: the caller gives the graph (node -> the nodes it needs first), a
function that starts one node as a process, and optionally each node's cost: the cores it keeps busy (its thread
count; 1 when not given, at most ``jobs``). A node starts once every node it needs has finished with exit status
0 and its cost fits in the cores not taken by the running nodes, so the running nodes' threads never outnumber
the cores (a thread that waits for a core costs far more than the core it would add: see acneops.pipeline.repro).
The first failure stops new starts: the processes already running are waited for (each ends its own way), the
rest are reported as not run. Ready nodes are taken in order of the most nodes downstream of them (the longest
chain of work behind it gets going), ties broken by name, so the order is deterministic; a node further down the
order starts when it fits and the first does not (backfill).

Each process's CPU time (user + system, its own and that of the processes it waited for: ``os.wait4``) is
recorded next to its wall time, so a caller can tell how busy the cores were.

If the scheduler itself is interrupted (Ctrl-C, or SIGTERM turned into SystemExit by the caller), it sends
SIGTERM to what the running processes started, then to those processes if they do not end, waits for them and
re-raises: no orphan keeps writing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

POLL_S = 0.05  # how often running processes are polled, s


@dataclass
class Outcome:
    """What a run of the graph did."""

    finished: list[str] = field(default_factory=list)  # nodes that exited 0, in completion order
    failed: dict[str, int] = field(default_factory=dict)  # node -> non-zero exit status
    not_run: list[str] = field(default_factory=list)  # nodes never started (a failure stopped the schedule)
    seconds: dict[str, float] = field(default_factory=dict)  # node -> wall time of its process, s
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # node -> CPU time of its process tree, s
    most_at_once: int = 0  # largest number of processes that ran at the same time
    most_cores: int = 0  # largest sum of the running nodes' costs

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_run


def check_graph(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """``graph`` as {node: set of nodes it needs}; a need that is not a node, or a cycle, is an error."""
    needs = {node: set(ups) for node, ups in graph.items()}
    unknown = sorted(f"{node} needs {up}" for node, ups in needs.items() for up in ups if up not in needs)
    if unknown:
        raise ValueError(f"the graph names nodes it does not contain: {', '.join(unknown)}")
    done: set[str] = set()
    while len(done) < len(needs):
        layer = {node for node, ups in needs.items() if node not in done and ups <= done}
        if not layer:
            raise ValueError(f"the graph has a cycle among {sorted(set(needs) - done)}")
        done |= layer
    return needs


def downstream_counts(needs: Mapping[str, set[str]]) -> dict[str, int]:
    """node -> how many nodes need it, directly or through others."""
    users: dict[str, set[str]] = {node: set() for node in needs}
    for node, ups in needs.items():
        for up in ups:
            users[up].add(node)

    def below(node: str, seen: set[str]) -> set[str]:
        for user in users[node] - seen:
            seen.add(user)
            below(user, seen)
        return seen

    return {node: len(below(node, set())) for node in needs}


def run_graph(graph: Mapping[str, Iterable[str]], start: Callable[[str], subprocess.Popen], jobs: int,
              on_end: Callable[[str, int, float, float], None] | None = None,
              cost: Mapping[str, int] | None = None) -> Outcome:
    """Start every node of ``graph`` with ``start(node)`` once the nodes it needs finished and its ``cost`` (cores,
    default 1, capped at ``jobs``) fits in the ``jobs`` cores the running nodes leave free.

    ``on_end(node, exit_status, seconds, cpu_seconds)`` is called as each process ends (in the scheduler's
    thread)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    needs = check_graph(graph)
    cores = {node: min(jobs, max(1, int((cost or {}).get(node, 1)))) for node in needs}
    weight = downstream_counts(needs)
    pending = sorted(needs, key=lambda node: (-weight[node], node))
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    out = Outcome()
    try:
        while pending or running:
            free = jobs - sum(cores[node] for node in running)
            for node in [] if out.failed else list(pending):
                if needs[node] <= set(out.finished) and cores[node] <= free:
                    pending.remove(node)
                    running[node] = (start(node), time.monotonic())
                    free -= cores[node]
            out.most_at_once = max(out.most_at_once, len(running))
            out.most_cores = max(out.most_cores, jobs - free)
            if not running:
                break  # a failure stopped new starts (a ready node always fits in an empty machine)
            time.sleep(POLL_S)
            for node, (proc, began) in list(running.items()):
                ended = _reap(proc)
                if ended is None:
                    continue
                status, cpu = ended
                del running[node]
                out.seconds[node] = time.monotonic() - began
                out.cpu_seconds[node] = cpu
                if status == 0:
                    out.finished.append(node)
                else:
                    out.failed[node] = status
                if on_end is not None:
                    on_end(node, status, out.seconds[node], cpu)
    except BaseException:
        _stop(proc for proc, _ in running.values())
        raise
    out.not_run = pending
    return out


def _reap(proc: subprocess.Popen) -> tuple[int, float] | None:
    """(exit status, CPU seconds of the process and the children it waited for) once ``proc`` ended, else None.
    The status reads as Popen's: negative for a signal; ``proc.returncode`` is set."""
    if proc.returncode is not None:  # reaped elsewhere (e.g. by Popen.wait); its CPU time is lost
        return proc.returncode, 0.0
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped by someone else meanwhile
        return (proc.returncode if proc.returncode is not None else proc.wait()), 0.0
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _stop(procs: Iterable[subprocess.Popen], grace_s: float = 30) -> None:
    """Stop the processes and everything they started: SIGTERM to their descendants first (a stage's DVC process
    runs the stage command as its child; DVC then sees the command fail and releases its locks itself), then,
    after ``grace_s``, SIGTERM to any of ``procs`` still running; waits for all."""
    import psutil

    procs = list(procs)
    children = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            children += psutil.Process(proc.pid).children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    psutil.wait_procs(children, timeout=grace_s)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
