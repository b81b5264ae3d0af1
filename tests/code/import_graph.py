"""The acneops package's import graph, read statically from the source (helper for the layout and DVC tests).

Every ``import`` / ``from ... import`` in a module counts, at module level or inside functions and methods,
except those under ``if TYPE_CHECKING:`` (never executed). Relative imports are resolved against the module's
package; ``from acneops.x import y`` points at the submodule ``acneops.x.y`` when there is one, else at
``acneops.x``.

Two views:
- :func:`edges` (for circles and one-way rules): module -> every acneops module it imports anywhere;
- :func:`closure` (for DVC deps): the modules that run. Importing a module runs its module-level code (class
  bodies and methods count as module level) and the ``__init__`` of every package above it. A top-level
  function's own imports run only if the function can run: it is imported by name elsewhere, referenced by
  name from module-level code or from another function that can run, decorated (a registry may call it), or
  its module is used as a whole (``import acneops.x`` / ``from acneops import x``). This keeps a stage's
  closure to what it calls: `acneops.stages.params.phantom_config` importing the phantom does not make every
  stage that imports `params.foreach_values` depend on it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "acneops"
MODULE_LEVEL = ""  # the owner of code outside top-level functions
WHOLE = None  # imported name meaning "the module object itself": any of its functions may run


@dataclass
class Module:
    """One acneops module: its file, its top-level functions and, per owner (a top-level function's name, or
    MODULE_LEVEL), the acneops names it imports and the names it references."""

    name: str  # dotted, e.g. acneops.gan.train ("acneops.gan" for acneops/gan/__init__.py)
    path: Path  # absolute path of the .py file
    rel: str  # path relative to the repository root, e.g. acneops/gan/train.py
    is_package: bool
    functions: set[str] = field(default_factory=set)  # top-level function names
    decorated: set[str] = field(default_factory=set)  # top-level functions with a decorator
    imports: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)  # owner -> {(module, name)}
    refs: dict[str, set[str]] = field(default_factory=dict)  # owner -> names it loads

    def all_imports(self) -> set[str]:
        """Every acneops module this one imports, anywhere in the file."""
        return {target for pairs in self.imports.values() for target, _ in pairs}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[tuple[str, str | None]]:
    """The (acneops module, imported name or WHOLE) pairs one import statement names."""
    if isinstance(node, ast.Import):
        return {(a.name, WHOLE) for a in node.names if a.name.split(".")[0] == PACKAGE}
    if node.level:  # relative: from the module's package, up level-1 packages
        base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != PACKAGE:
        return set()
    out = set()
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in known:
            out.add((sub, WHOLE))  # a submodule
        else:
            out.add((target, WHOLE if alias.name == "*" else alias.name))
    return out


def _collect(module: Module, tree: ast.Module, known: set[str]) -> None:
    def visit(node: ast.AST, owner: str) -> None:
        children = node.orelse if _is_type_checking(node) else ast.iter_child_nodes(node)
        for child in children:
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                module.imports[owner].update(_resolve(module, child, known))
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
                module.refs[owner].add(child.id)
            visit(child, owner)

    module.imports[MODULE_LEVEL], module.refs[MODULE_LEVEL] = set(), set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            module.functions.add(stmt.name)
            module.imports[stmt.name], module.refs[stmt.name] = set(), set()
            if stmt.decorator_list:
                module.decorated.add(stmt.name)
            for part in [*stmt.decorator_list, stmt.args]:  # evaluated when the def runs: module level
                visit(ast.Expression(part) if isinstance(part, ast.expr) else part, MODULE_LEVEL)
            for part in stmt.body:
                visit(ast.Module([part], []), stmt.name)
        else:
            visit(ast.Module([stmt], []), MODULE_LEVEL)


def load(root: Path = ROOT) -> dict[str, Module]:
    """Every module of the acneops package under ``root``, with its imports."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(f, root): Module(module_name(f, root), f, f.relative_to(root).as_posix(),
                                            f.name == "__init__.py") for f in files}
    known = set(modules)
    for m in modules.values():
        _collect(m, ast.parse(m.path.read_text(), filename=str(m.path)), known)
    return modules


def edges(modules: dict[str, Module]) -> dict[str, set[str]]:
    """module -> the acneops modules its import statements name, anywhere in the file (for circles: a module
    and its package's ``__init__`` meeting through the implicit parent import is how packages work)."""
    return {name: {t for t in m.all_imports() if t in modules and t != name} for name, m in modules.items()}


def parents(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name``: acneops.gan.ada.pipe -> [acneops, acneops.gan, ...]."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(modules: dict[str, Module], roots: dict[str, set[str]]) -> set[str]:
    """The acneops modules that run when the ``roots`` run.

    ``roots`` maps a module to the top-level functions of it that do *not* run in this use (the other
    commands of the CLI, the other stages' loaders): every other function of a root may run. Whatever is
    reached from there is followed as the module docstring says.
    """
    blocked = {(name, fn) for name, skip in roots.items() for fn in skip}
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = []
    for name in roots:
        todo += [(name, MODULE_LEVEL)] + [(name, fn) for fn in modules[name].functions]

    def use(target: str, name: str | None) -> None:
        if target not in modules:
            return
        todo.append((target, MODULE_LEVEL))
        m = modules[target]
        todo.extend((target, fn) for fn in (m.functions if name is WHOLE else {name} & m.functions))

    while todo:
        node = todo.pop()
        if node in seen or node in blocked:
            continue
        seen.add(node)
        name, owner = node
        m = modules[name]
        for parent in parents(name):
            use(parent, MODULE_LEVEL)
        for target, imported in m.imports[owner]:
            use(target, imported)
        called = m.refs[owner] & m.functions
        if owner == MODULE_LEVEL:
            called |= m.decorated
        todo.extend((name, fn) for fn in called)
    return {name for name, _ in seen}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a -> b -> ... -> a) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_path_in(graph, comp) for comp in components]


def _path_in(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """The shortest circle through the first module of a strongly connected component (breadth-first)."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}

    def chain(v: str) -> list[str]:
        out = [v]
        while out[-1] != start:
            out.append(prev[out[-1]])
        return out[::-1]

    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    return chain(v) + [start]
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp + [comp[0]]  # not reached: every member of a component lies on a circle through start
