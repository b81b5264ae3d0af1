"""What DVC says about the pipeline: its stage graph, and which stages are out of date (DVC's Python API).

Stage names are DVC's addressing (``train_gan@mild``, ``data.dvc``), the names `dvc repro` accepts.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from acneops.core.errors import AcneopsError


@contextlib.contextmanager
def _dvc_repo(root: Path, doing: str) -> Iterator[Any]:
    """DVC's Repo at ``root``; a DVC error becomes an AcneopsError saying what was being done."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            yield repo
    except DvcException as exc:
        raise AcneopsError(f"{doing} in {root}: {exc}") from None


def stage_graph(root: Path, targets: Iterable[str] = ()) -> dict[str, set[str]]:
    """{stage: the stages whose outputs it depends on} for ``targets`` and everything upstream of them, as
    `dvc repro <targets>` would reproduce them (every stage of the repository when there are no targets)."""
    from dvc.exceptions import DvcException

    with _dvc_repo(root, "reading the DVC pipeline") as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        chosen = set(graph.nodes)
        if targets:
            chosen = set()
            for target in targets:
                try:
                    chosen.update(repo.stage.collect(target, with_deps=True, graph=graph))
                except DvcException as exc:
                    raise AcneopsError(f"dvc repro target '{target}': {exc} (`dvc stage list --all` lists the "
                                       "stages)") from None
        return {stage.addressing: {dep.addressing for dep in graph.successors(stage) if dep in chosen}
                for stage in chosen}


def out_of_date(root: Path, stages: Iterable[str]) -> set[str]:
    """The ``stages`` that `dvc status` reports changed (deps, params, outs, command, or always changed)."""
    stages = list(stages)
    if not stages:
        return set()
    with _dvc_repo(root, "dvc status") as repo:
        return set(repo.status(targets=stages)) & set(stages)


def with_downstream(graph: dict[str, set[str]], stages: set[str]) -> dict[str, set[str]]:
    """The part of ``graph`` that must run when ``stages`` are out of date: them and every stage downstream of
    them (a stage whose upstream reruns may change), each needing only the stages of that part."""
    part = set(stages)
    grew = True
    while grew:
        more = {stage for stage, ups in graph.items() if ups & part} - part
        part |= more
        grew = bool(more)
    return {stage: graph[stage] & part for stage in part}
