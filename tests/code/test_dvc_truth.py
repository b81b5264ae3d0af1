"""DVC tells the truth (issue 10): every acneops file a stage runs is one of its dvc.yaml deps, no acneops dep
of a stage is code the stage never runs, and every file a stage writes is one of its declared outs, metrics or
plots.

Code: a stage runs as `acneops run <stage>`: acneops/cli.py's `run` command (not the CLI's other commands), then
acneops.stages.run_stage with the stage's own loader from STAGES (not the other stages'), then the stage
module. tests/code/import_graph.py follows the imports from there (see its docstring for what counts).

Files: the whole default pipeline (every stage and foreach run) runs on a tiny phantom in a throwaway repository,
stage by stage in DVC's order through run_stage (what `acneops run` calls); the files each stage creates or
changes must lie under that stage's declared paths, as DVC resolves them for the params.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import import_graph
import pytest
import yaml
from pipeline_repo import copy_pipeline, tiny_params

from acneops.stages import STAGES, run_stage

ROOT = Path(__file__).resolve().parents[2]


def dvc_stages(root: Path = ROOT) -> dict[str, dict]:
    """dvc.yaml's stages as written (a foreach stage's `do` block stands for all its runs)."""
    return {name: spec.get("do", spec) for name, spec in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items()}


def _function_for(tree: ast.Module, decorated_with: str) -> dict[str, str]:
    """{registered name: function} of the top-level functions decorated with ``<x>.<decorated_with>(name)``."""
    out = {}
    for fn in tree.body:
        for dec in getattr(fn, "decorator_list", []):
            if isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == decorated_with:
                out[dec.args[0].value if dec.args else fn.name] = fn.name
    return out


def stage_loaders(modules: dict[str, import_graph.Module]) -> dict[str, str]:
    """{stage: loader function} from the STAGES dict literal in acneops/stages/__init__.py."""
    tree = ast.parse(modules["acneops.stages"].path.read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "STAGES" and isinstance(node.value, ast.Dict):
            return {k.value: v.id for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError("acneops/stages/__init__.py: no `STAGES = {...}` dict literal of stage name -> loader")


def stage_closure(modules: dict[str, import_graph.Module], stage: str) -> set[str]:
    """The acneops files (repository-relative) that `acneops run <stage>` runs."""
    commands = _function_for(ast.parse(modules["acneops.cli"].path.read_text()), "command")
    loaders = stage_loaders(modules)
    roots = {"acneops.cli": {fn for name, fn in commands.items() if name != "run"},
             "acneops.stages": {fn for name, fn in loaders.items() if name != stage},
             f"acneops.stages.{stage}": set()}
    return {modules[m].rel for m in import_graph.closure(modules, roots)}


def _covers(dep: str, file: str) -> bool:
    return file == dep or file.startswith(dep.rstrip("/") + "/")


def dep_problems(stages: dict[str, dict], closures: dict[str, set[str]]) -> list[str]:
    """A missing dep for every file a stage runs that no dep covers, and every acneops dep covering none."""
    problems = []
    for stage, files in sorted(closures.items()):
        deps = [d for d in stages[stage].get("deps", []) if isinstance(d, str) and d.startswith("acneops")]
        problems += [f"dvc.yaml stage '{stage}': add dep {f} (the stage runs it; a folder dep of its package "
                     "covers it too)" for f in sorted(files) if not any(_covers(d, f) for d in deps)]
        problems += [f"dvc.yaml stage '{stage}': dep {d} is code the stage never runs; remove it"
                     for d in deps if not any(_covers(d, f) for f in files)]
    return problems


@pytest.fixture(scope="module")
def closures() -> dict[str, set[str]]:
    modules = import_graph.load(ROOT)
    return {stage: stage_closure(modules, stage) for stage in stage_loaders(modules)}


def test_stages_registry_equals_dvc_yaml_and_loads_each_module_by_its_name():
    modules = import_graph.load(ROOT)
    assert sorted(stage_loaders(modules)) == sorted(STAGES) == sorted(dvc_stages())
    for stage, load in STAGES.items():
        assert load().__name__ == f"acneops.stages.{stage}"


def test_every_stage_depends_on_exactly_the_acneops_code_it_runs(closures):
    problems = dep_problems(dvc_stages(), closures)
    assert not problems, "\n".join(problems)


def test_a_stage_runs_only_its_own_stage_module_and_the_run_command(closures):
    for stage, files in closures.items():
        assert {f for f in files if f.startswith("acneops/stages/") and f != "acneops/stages/params.py"} == {
            "acneops/stages/__init__.py", f"acneops/stages/{stage}.py"}
        assert "acneops/cli.py" in files and not any(f.startswith("acneops/data/phantom") for f in files)


def test_a_removed_or_stale_dep_is_named(closures):
    stages = copy.deepcopy(dvc_stages())
    stages["evaluate"]["deps"] = [d for d in stages["evaluate"]["deps"] if d != "acneops/tracking"]
    stages["ingest"]["deps"].append("acneops/gan")
    problems = dep_problems(stages, closures)
    assert problems == [
        "dvc.yaml stage 'evaluate': add dep acneops/tracking/__init__.py (the stage runs it; a folder dep of its "
        "package covers it too)",
        "dvc.yaml stage 'evaluate': add dep acneops/tracking/lineage.py (the stage runs it; a folder dep of its "
        "package covers it too)",
        "dvc.yaml stage 'evaluate': add dep acneops/tracking/model_uri.py (the stage runs it; a folder dep of its "
        "package covers it too)",
        "dvc.yaml stage 'ingest': dep acneops/gan is code the stage never runs; remove it",
    ]


# Written on purpose outside every DVC out: caches, not results (a stage's outputs never depend on them).
NOT_OUTPUTS = {"evaluate": "evaluate.cache_dir"}  # stage -> params key of its feature-statistics cache
SKIP_TOP = {".git", ".dvc"}  # DVC's and git's own bookkeeping


def snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    """{repository-relative file: (size, mtime_ns)}."""
    out = {}
    for path in repo.rglob("*"):
        rel = path.relative_to(repo).as_posix()
        if rel.split("/")[0] not in SKIP_TOP and path.is_file():
            st = path.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def declared_outs(repo: Path) -> list[tuple[str, list[str]]]:
    """(stage, its declared outs, metrics and plots) for every stage but data.dvc, dependencies first, as DVC
    resolves dvc.yaml with the repository's params.yaml."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        order = reversed(list(nx.topological_sort(dvc_repo.index.graph)))
        return [(st.addressing, [o.def_path for o in st.outs]) for st in order if st.addressing != "data.dvc"]


def undeclared_writes(writes: dict[str, set[str]], declared: dict[str, list[str]],
                      allowed: dict[str, str]) -> list[str]:
    """One line per file a stage wrote outside its declared paths (and outside its allowed cache folder)."""
    return [f"{stage} wrote {f}, which dvc.yaml does not declare for it (add an out, metric or plot, or write it "
            "into one of the stage's declared folders)"
            for stage, files in writes.items() for f in sorted(files)
            if not any(_covers(d, f) for d in [*declared[stage], *([allowed[stage]] if stage in allowed else [])])]


def test_every_file_a_stage_writes_is_declared_in_dvc_yaml(tmp_path, monkeypatch):
    from acneops.data import phantom
    from acneops.stages.params import phantom_config

    params = tiny_params()
    repo = copy_pipeline(tmp_path / "repo", params)
    monkeypatch.chdir(repo)
    phantom.generate(phantom_config(params), Path(params["ingest"]["data_dir"]))  # the input: data.dvc
    plan = declared_outs(repo)
    assert len(plan) == len(STAGES) - 3 + sum(len(params[s]["runs"]) for s in ("train_gan", "train_classifier", "sort"))
    writes: dict[str, set[str]] = {}
    for stage, _ in plan:
        before = snapshot(repo)
        name, _, item = stage.partition("@")
        run_stage(name, item or None, "params.yaml")
        writes[stage] = {f for f, sig in snapshot(repo).items() if before.get(f) != sig}
        assert writes[stage], f"{stage} wrote nothing"
    declared = dict(plan)
    allowed = {stage: str(params[key.split(".")[0]][key.split(".")[1]]) for stage, key in NOT_OUTPUTS.items()}
    problems = undeclared_writes(writes, declared, allowed)
    assert not problems, "\n".join(problems)
    missing = [f"{stage}: declared {out} was not written (dvc repro would fail)"
               for stage, outs in plan for out in outs if not (repo / out).exists()]
    assert not missing, "\n".join(missing)
    # the check can fail: undeclare one out and it names the stage and every file written there
    doctored = {**declared, "synthesize": [o for o in declared["synthesize"] if o != "reports/audit_synthesize"]}
    found = undeclared_writes(writes, doctored, allowed)
    assert sorted(found) == [
        f"synthesize wrote reports/audit_synthesize/{cls}.{ext}, which dvc.yaml does not declare for it (add an out, "
        "metric or plot, or write it into one of the stage's declared folders)"
        for cls in sorted(params["synthesize"]["counts"]) for ext in ("json", "png")]
