"""No import cycles in our two packages, read from the source with `ast` (nothing is imported).

The rule: an edge A -> B is an import of B that runs when A is imported, i.e. at module level (inside
`try`/`if` too, but not under `if TYPE_CHECKING:`). `from P import x` counts as an import of P.x when
that is one of our modules, else of P; the implicit import of parent packages is left out (our
`__init__` files import nothing of their own). Imports inside functions and classes' methods run later,
when the module is already complete, so they cannot deadlock an import; they are still collected, as
"lazy" edges (with `importlib.import_module("literal")`), and any cycle through them is listed in the
output of `python tests/test_imports.py`, and a test fails on any cycle through them too, so that a
circle in the design cannot come back unnoticed.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hairclip": ROOT / "backend" / "hairclip", "hairclip_shared": ROOT / "shared" / "hairclip_shared"}


def modules() -> dict[str, Path]:
    found = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = (pkg, *path.relative_to(folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str, level: int, here: str, is_pkg: bool) -> str:
    if not level:
        return name
    base = here.split(".")
    base = base[: len(base) - level + (1 if is_pkg else 0)]
    return ".".join([*base, name] if name else base)


def imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(module-level, lazy) imports of our own modules by `name`."""
    tree = ast.parse(path.read_text(), str(path))
    eager, lazy = set(), set()
    is_pkg = path.name == "__init__.py"

    def targets(node: ast.AST) -> set[str]:
        out = set()
        if isinstance(node, ast.Import):
            out = {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module or "", node.level, name, is_pkg)
            out = {f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            out = {node.args[0].value}
        return {m for m in out if m in known}

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub, deferred)
                continue
            later = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            (lazy if later else eager).update(targets(child))
            visit(child, later)

    visit(tree, False)
    eager.discard(name)
    lazy.discard(name)
    return eager, lazy - eager


def graph(lazy_too: bool) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    out = {}
    for name, path in mods.items():
        eager, lazy = imports(name, path, known)
        out[name] = eager | lazy if lazy_too else eager
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def test_the_walker_sees_our_modules_and_their_imports():
    g = graph(lazy_too=True)
    assert {"hairclip.server", "hairclip.engine", "hairclip_shared.client"} <= set(g)
    assert "hairclip_shared.protocol" in g["hairclip_shared.client"]
    assert "hairclip.engine_api" in g["hairclip.server"] and "hairclip.engine" in g["hairclip.cli_server"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_level_import_cycle():
    assert cycles(graph(lazy_too=False)) == []


def test_no_import_cycle_even_through_lazy_imports():
    assert cycles(graph(lazy_too=True)) == []


def test_the_installers_share_helpers_without_importing_each_other():
    g = graph(lazy_too=True)
    assert all("hairclip.install_common" in g[f"hairclip.install_{m}"] for m in ("gimp", "plugin"))
    assert "hairclip.install_plugin" not in g["hairclip.install_gimp"]
    assert not g["hairclip.install_common"] - {"hairclip.errors"}


# ---------------------------------------------------------------------------------------------- module length

MAX_LINES = 400
LONG_MARKER = "Long because"  # a module over MAX_LINES says why in its docstring, with these words
ALL_CODE = (*PACKAGES.values(), ROOT / "plugin_krita" / "hairclip", ROOT / "plugin_gimp" / "hairclip")


def long_modules_without_a_reason() -> list[str]:
    out = []
    for folder in ALL_CODE:
        for path in sorted(folder.rglob("*.py")):
            text = path.read_text()
            doc = ast.get_docstring(ast.parse(text)) or ""
            if len(text.splitlines()) > MAX_LINES and LONG_MARKER not in " ".join(doc.split()):
                out.append(path.relative_to(ROOT).as_posix())
    return out


def test_no_module_over_400_lines_unless_its_docstring_says_why():
    found = set(long_modules_without_a_reason())
    assert not found, f"over {MAX_LINES} lines with no '{LONG_MARKER}' in the docstring: {found}"


def test_the_length_rule_sees_a_long_module(tmp_path, monkeypatch):
    (tmp_path / "short.py").write_text('"""Short."""\n')
    (tmp_path / "long.py").write_text('"""Long."""\n' + "x = 1\n" * MAX_LINES)
    (tmp_path / "said.py").write_text('"""Long because it is one table."""\n' + "x = 1\n" * MAX_LINES)
    monkeypatch.setattr(sys.modules[__name__], "ALL_CODE", (tmp_path,))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert long_modules_without_a_reason() == ["long.py"]




def classes_without_a_one_sentence_job() -> list[str]:
    """Classes whose docstring is missing or whose first paragraph is more than one sentence."""
    out = []
    for folder in ALL_CODE:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    first = " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
                    if not first or len(re.split(r"(?<=[.!?])\s+(?=[A-Z`])", first)) > 1:
                        out.append(f"{path.relative_to(ROOT).as_posix()}:{node.name}")
    return out


def test_every_class_says_its_job_in_one_sentence():
    found = classes_without_a_one_sentence_job()
    assert not found, f"classes with no docstring, or more than one sentence before its first blank line: {found}"


def test_the_shared_package_never_imports_the_backend():
    g = graph(lazy_too=True)
    assert not [(a, b) for a, bs in g.items() if a.startswith("hairclip_shared") for b in bs
                if not b.startswith("hairclip_shared")]


if __name__ == "__main__":
    g = graph(lazy_too=True)
    eager = graph(lazy_too=False)
    for name in sorted(g):
        for dep in sorted(g[name] - eager[name]):
            print(f"lazy: {name} -> {dep}")
    print("module-level cycles:", cycles(eager) or "none")
    print("cycles through lazy imports:", cycles(g) or "none")
