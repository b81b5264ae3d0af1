"""The package layout the tree promises (STYLE.md 1, 7; issue 10): imports go one way, stages -> domain
packages -> core, with no circle between acneops modules, and no module over 400 lines.

The import graph is read statically (tests/code/import_graph.py): every import counts, including those
inside functions, so a lazy import cannot hide a circle or an upward import. Each check is also run on a
copy of the package with the fault planted, so the checks are known to catch what they are for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import import_graph
import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400
# the layers above the domain packages (acneops.pipeline: `acneops repro`, which reads stage thread counts;
# acneops.flows: the Prefect flows, which run stages and the pipeline)
ENTRY = ("acneops.stages", "acneops.pipeline", "acneops.cli", "acneops.__main__", "acneops.flows")


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def circles(modules: dict[str, import_graph.Module]) -> list[str]:
    return [" -> ".join(c) for c in import_graph.find_cycles(import_graph.edges(modules))]


def upward_imports(modules: dict[str, import_graph.Module]) -> list[str]:
    """Domain modules (everything outside stages, cli, __main__) importing acneops.stages or acneops.cli."""
    return [f"{name} ({m.rel}) imports {target}"
            for name, m in sorted(modules.items()) if not any(_in(name, e) for e in ENTRY)
            for target in sorted(m.all_imports()) if _in(target, "acneops.stages") or _in(target, "acneops.cli")]


def core_leaks(modules: dict[str, import_graph.Module]) -> list[str]:
    """acneops.core modules importing any acneops module outside acneops.core."""
    return [f"{name} ({m.rel}) imports {target}" for name, m in sorted(modules.items()) if _in(name, "acneops.core")
            for target in sorted(m.all_imports()) if not _in(target, "acneops.core")]


def package_of(name: str) -> str:
    """The top-level package (or module) of acneops a module belongs to: acneops.gan.ada.pipe -> acneops.gan."""
    return ".".join(name.split(".")[:2])


def package_circles(modules: dict[str, import_graph.Module]) -> list[str]:
    """Circles between top-level packages (classify -> metrics -> classify): each package must sit on a floor
    above everything it imports, even when no two modules import each other."""
    graph: dict[str, set[str]] = {}
    for name, m in modules.items():
        src = package_of(name)
        graph.setdefault(src, set()).update(package_of(t) for t in m.all_imports() if package_of(t) != src)
    return [" -> ".join(c) for c in import_graph.find_cycles(graph)]


def long_modules(modules: dict[str, import_graph.Module]) -> list[str]:
    lengths = {m.rel: len(m.path.read_text().splitlines()) for m in modules.values()}
    return [f"{path} has {n} lines (at most {MAX_LINES}: split it by concern)"
            for path, n in sorted(lengths.items()) if n > MAX_LINES]


CHECKS = {"circles": circles, "package_circles": package_circles, "upward_imports": upward_imports,
          "core_leaks": core_leaks, "long_modules": long_modules}


@pytest.fixture(scope="module")
def modules() -> dict[str, import_graph.Module]:
    return import_graph.load(ROOT)


def test_graph_sees_every_module_and_lazy_imports(modules):
    assert len(modules) == len(list((ROOT / "acneops").rglob("*.py")))
    # acneops.cli imports the stages inside its `run` command only: a lazy import is still an import
    assert "acneops.stages" in modules["acneops.cli"].all_imports()


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_layout(check, modules):
    problems = CHECKS[check](modules)
    assert not problems, f"{check}:\n" + "\n".join(problems)


def _planted(tmp_path: Path, rel: str, code: str) -> dict[str, import_graph.Module]:
    """The package copied to ``tmp_path`` with ``code`` appended to the module at ``rel``."""
    shutil.copytree(ROOT / "acneops", tmp_path / "acneops", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "acneops" / rel
    target.write_text(target.read_text() + code)
    return import_graph.load(tmp_path)


def test_checks_catch_planted_faults(tmp_path, modules):
    # a circle through a function-level import: acneops.gan.sampling imports acneops.gan.checkpoint
    assert "acneops.gan.checkpoint" in modules["acneops.gan.sampling"].all_imports()
    planted = _planted(tmp_path / "circle", "gan/checkpoint.py",
                       "\n\ndef _planted():\n    from ..gan import sampling\n    return sampling\n")
    found = circles(planted)
    assert any("acneops.gan.checkpoint" in c and "acneops.gan.sampling" in c for c in found), found

    # a package-level circle without a module-level one: metrics (below classify) reaching up into classify
    planted = _planted(tmp_path / "pkg", "metrics/neighbors.py",
                       "\n\ndef _planted():\n    from acneops.classify import backbones\n    return backbones\n")
    assert not circles(planted)
    assert any("acneops.metrics" in c and "acneops.classify" in c for c in package_circles(planted))

    planted = _planted(tmp_path / "upward", "features/cache.py", "\nfrom acneops.stages import run_stage\n")
    assert any(p.startswith("acneops.features.cache") for p in upward_imports(planted))

    planted = _planted(tmp_path / "core", "core/io.py", "\n\ndef _planted():\n    import acneops.gan.ops\n")
    assert core_leaks(planted) == ["acneops.core.io (acneops/core/io.py) imports acneops.gan.ops"]

    planted = _planted(tmp_path / "long", "core/errors.py", "\n" * MAX_LINES)
    assert any("errors.py" in p for p in long_modules(planted))


def test_every_public_name_a_package_lists_exists():
    """``from acneops.<pkg> import *`` must not fail: every name in a module's ``__all__`` is defined there."""
    import importlib

    missing = []
    for path in sorted((ROOT / "acneops").rglob("*.py")):
        text = path.read_text()
        if "__all__" not in text:
            continue
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        module = importlib.import_module(name)
        missing += [f"{name}.{n}" for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert not missing, f"__all__ names that do not exist: {missing}"
