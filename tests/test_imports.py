"""The import structure of prefdata/: no import cycles, and no module importing another
module's private names. Read from the source (the AST of every module), so an import inside
a function counts as much as one at the top; imports under `if TYPE_CHECKING:` do not run and
do not count."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "prefdata"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, str | None, int]]:
    """(imported prefdata module, imported name or None, line) for each import in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield sub, None, node.lineno  # a module imported from its package
                elif base in known:
                    yield base, alias.name, node.lineno


def graph() -> tuple[dict[str, set[str]], list[str]]:
    """(module -> the prefdata modules it imports, private-name imports across modules)."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    private: list[str] = []
    for name, path in known.items():
        for target, imported, line in imports(name, path, set(known)):
            if target != name:
                edges[name].add(target)
            dunder = imported is not None and imported.startswith("__") and imported.endswith("__")
            if imported is not None and imported.startswith("_") and not dunder and target != name:
                private.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target}.{imported}")
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_cycles_and_private_imports(tmp_path: Path) -> None:
    # The checker on a made-up graph, so a checker that finds nothing cannot pass unseen.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    source = (
        "from typing import TYPE_CHECKING\n"
        "from pkg.other import _hidden, shown\n"
        "if TYPE_CHECKING:\n    from pkg.third import _typed\n"
        "def f():\n    from . import third\n"
    )
    (pkg / "mod.py").write_text(source)
    known = {"pkg.mod", "pkg.other", "pkg.third"}
    found = sorted(imports("pkg.mod", pkg / "mod.py", known), key=str)
    assert found == [("pkg.other", "_hidden", 2), ("pkg.other", "shown", 2), ("pkg.third", None, 6)]


def test_no_import_cycles_in_prefdata() -> None:
    edges, _ = graph()
    assert len(edges) > 50  # every module was read
    assert cycles(edges) == []


def test_no_module_imports_another_modules_private_names() -> None:
    _, private = graph()
    assert private == [], "import a public name instead (make it public where it is defined)"
