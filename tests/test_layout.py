"""The layout of ``src/corteza``, read from the source with :mod:`ast`.

Three rules, each a test:

- **Direction.** Imports go one way between packages (DESIGN.md, "Packages"):
  ``cli -> client -> wire``, ``server -> model -> wire``, ``compat -> client``;
  ``_version`` is a leaf anyone may read; nothing imports ``cli`` but
  ``__main__``. The CLI may import ``server`` and ``model`` only where loading
  ``corteza.cli`` does not run the import: inside a function, under ``if
  TYPE_CHECKING:``, or in a CLI module that no module-level import from
  ``corteza.cli`` reaches (``cli/serve_command.py``, which ``corteza serve``
  imports when it runs); so the torch-free install runs every other command.
  Every other import counts here, function-local ones and those under ``if
  TYPE_CHECKING:`` too: a type still couples two packages.
- **No cycles.** An edge is an import that runs when its module is loaded:
  module level, class bodies, ``try``/``if`` blocks at the top; not an import
  under ``if TYPE_CHECKING:`` (never runs) and not one inside a function (runs
  after both modules have loaded). A cycle that only a function-local import
  closes is still a cycle in the design, so it fails too, unless the pair is
  listed in :data:`LAZY_CYCLES` with the reason. An import names the deepest
  module it reaches (``from corteza.client.errors import X`` is an edge to
  ``corteza.client.errors``, not to ``corteza.client``): Python loads the
  parent package first, but a package's ``__init__`` only re-exports.
- **Size.** No module over :data:`MAX_LINES` lines.

The README's "Layout" table names every folder and module; a test holds it to the tree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
README = SRC.parent / "README.md"
ROOT = "corteza"
MAX_LINES = 400

# package -> the packages its modules may import; "corteza" is the root package.
ALLOWED: dict[str, set[str]] = {
    "corteza": {"_version", "client"},  # the root re-exports the client, lazily
    "__main__": {"cli"},
    "_version": set(),
    "cli": {"_version", "client", "wire"},
    "client": {"_version", "wire"},
    "compat": {"_version", "client", "wire"},
    "model": {"wire"},  # ModelConfig lives in corteza.wire.model_config (torch-free)
    "server": {"_version", "model", "wire"},
    "wire": {"_version"},
}
# package -> the packages it may import only where loading the package does not run the import.
DEFERRED: dict[str, set[str]] = {"cli": {"model", "server"}}
# (importer, imported) -> why a function-local import may close a cycle.
LAZY_CYCLES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the deepest module of ours it reaches
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # under ``if TYPE_CHECKING:``


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _deepest(name: str) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of our modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package.pop()
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" for alias in node.names]
    for name in names:
        if name.split(".")[0] == ROOT and (target := _deepest(name)) and target != module:
            yield target


def _imports(module: str) -> Iterator[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))

    def walk(nodes: list[ast.stmt], lazy: bool, typing_only: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, node):
                    yield Import(module, target, node.lineno, lazy, typing_only)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(node.body, True, typing_only)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, lazy, True)
                yield from walk(node.orelse, lazy, typing_only)
            else:
                for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        inner = [c for c in children if isinstance(c, ast.stmt)]
                        for child in children:
                            if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                                inner.extend(child.body)
                        yield from walk(inner, lazy, typing_only)

    yield from walk(tree.body, False, False)


IMPORTS = list(dict.fromkeys(imp for module in MODULES for imp in _imports(module)))


def _loaded_with(package: str) -> set[str]:
    """The modules that importing ``package`` loads: module-level imports, followed."""
    edges = _graph(lambda imp: not imp.typing_only and not imp.lazy)
    loaded, todo = {package}, [package]
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in loaded:
                loaded.add(target)
                todo.append(target)
    return loaded


def test_imports_go_one_way_between_packages() -> None:
    eager = {module for package in DEFERRED for module in _loaded_with(f"{ROOT}.{package}")}
    upward = set()
    for imp in IMPORTS:
        source, target = _package(imp.source), _package(imp.target)
        allowed = ALLOWED[source]
        if imp.lazy or imp.typing_only or imp.source not in eager:
            allowed = allowed | DEFERRED.get(source, set())
        if source != target and target not in allowed:
            upward.add(f"{imp.source}:{imp.line} imports {imp.target} ({source} -> {target})")
    assert sorted(upward) == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def _graph(keep: Callable[[Import], bool]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in IMPORTS:
        if keep(imp):
            edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def test_no_import_cycle_when_modules_load() -> None:
    assert _cycles(_graph(lambda imp: not imp.typing_only and not imp.lazy)) == []


def test_no_cycle_closed_by_a_function_local_import_unless_listed() -> None:
    graph = _graph(
        lambda imp: (
            not imp.typing_only and (not imp.lazy or (imp.source, imp.target) not in LAZY_CYCLES)
        )
    )
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"], ["d", "e"]]


def test_the_lazy_cycle_list_names_real_imports() -> None:
    lazy = {(imp.source, imp.target) for imp in IMPORTS if imp.lazy}
    assert sorted(set(LAZY_CYCLES) - lazy) == []


def test_no_module_is_over_the_line_limit(figure: Callable[[str], None]) -> None:
    lines = {
        module: len(path.read_text(encoding="utf-8").splitlines())
        for module, path in MODULES.items()
    }
    largest = max(lines, key=lambda module: lines[module])
    figure(
        f"layout: modules={len(MODULES)} imports={len(IMPORTS)} "
        f"largest={largest} ({lines[largest]} lines, limit {MAX_LINES})"
    )
    assert sorted(f"{m} ({n} lines)" for m, n in lines.items() if n > MAX_LINES) == []


def _readme_layout() -> dict[str, set[str]]:
    """The README's Layout table: folder (relative to src/corteza, the root ``./``) -> modules."""
    section = README.read_text(encoding="utf-8").split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `([^`]+)` \|.*\| (`.+`) \|$", section, re.MULTILINE):
        table[row[0]] = set(re.findall(r"`([^`]+)`", row[1]))
    return table


def test_the_readme_layout_matches_the_tree() -> None:
    tree: dict[str, set[str]] = {}
    for path in MODULES.values():
        folder = path.parent.relative_to(SRC / ROOT).as_posix()
        name = path.stem
        if name == "__init__" and folder != ".":
            continue  # a package's __init__ goes without saying
        tree.setdefault("./" if folder == "." else f"{folder}/", set()).add(name)
    readme = _readme_layout()
    wrong = [
        f"{folder}: the README lacks {sorted(tree.get(folder, set()) - readme.get(folder, set()))}"
        f" and names {sorted(readme.get(folder, set()) - tree.get(folder, set()))} not in the tree"
        for folder in sorted(set(tree) | set(readme))
        if tree.get(folder) != readme.get(folder)
    ]
    assert wrong == []
