"""Structure of the mcl package, read from source with ``ast`` (no module of mcl is imported).

Rules: imports go down the layers in LAYERS (never up, hence no cycle); no function over
MAX_FUNCTION_LINES code lines; no file over MAX_FILE_LINES lines; no subpackage over
MAX_SUBPACKAGE_SHARE of the package's lines; no module-level name defined in two modules.
LAYERS is the one place the layer order is written down (docs/architecture.md explains it).
Each checker is a pure function of a source tree, and the last tests run it on a small
synthetic package that breaks its rule.
"""

from __future__ import annotations

import ast
import functools
import io
import textwrap
import tokenize
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# Lowest first. A module may import from its own layer and the layers below it, never above.
LAYERS = (
    ("mcl.config", "mcl.errors", "mcl.io", "mcl.processes", "mcl.text", "mcl.plots"),
    ("mcl.data",),
    ("mcl.models",),
    ("mcl.losses",),
    ("mcl.measures",),
    ("mcl.evaluation",),
    ("mcl.training",),
    ("mcl.stats",),
    ("mcl.analysis",),
    ("mcl.report",),
    ("mcl.studies",),
    ("mcl.bench",),
    ("mcl.cli",),
)
MAX_FUNCTION_LINES = 80  # code lines: not blank, not only a comment (a docstring does not count)
MAX_FILE_LINES = 600
MAX_SUBPACKAGE_SHARE = 0.30

# Module-level names that may be defined in more than one module: name -> the modules, exactly.
ALLOWED_SHARED_NAMES = {
    # `mcl analyse` is the CLI command for mcl.analysis.run.analyse (imported as run_analyse).
    "analyse": frozenset({"mcl.cli", "mcl.analysis.run"}),
    # `mcl train` is the CLI command for mcl.training.trainer.train.
    "train": frozenset({"mcl.cli", "mcl.training.trainer"}),
}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Overrides the conftest fixture of the same name: these tests only parse source, no torch."""
    yield


# ---------------------------------------------------------------------------
# reading the package

def module_name(path: Path, root: Path) -> str:
    """``mcl/a/b.py`` -> ``mcl.a.b``; ``mcl/a/__init__.py`` -> ``mcl.a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_package(root: Path = ROOT, package: str = "mcl") -> dict[str, tuple[Path, str]]:
    """Module name -> (path relative to ``root``, source) for every ``.py`` file of ``package``."""
    return {module_name(p, root): (p.relative_to(root), p.read_text())
            for p in sorted((root / package).rglob("*.py")) if "__pycache__" not in p.parts}


@functools.lru_cache(maxsize=None)
def parse(source: str) -> ast.Module:
    return ast.parse(source)


def imported_modules(name: str, source: str, modules, package: str = "mcl") -> list[tuple[str, int]]:
    """(module of ``package``, line) for every import in ``source``, at any depth (function bodies too).

    ``from p import x`` imports ``p`` and also ``p.x`` when that is a module in ``modules``;
    relative imports are resolved against ``name``.
    """
    is_package = name in modules and str(modules[name][0]).endswith("__init__.py")
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names if f"{base}.{a.name}" in modules]
    return [(m, line) for m, line in found if m == package or m.startswith(package + ".")]


def node_of(module: str) -> str:
    """The graph node of a module: its subpackage (``mcl.data.store`` -> ``mcl.data``) or top-level module."""
    return ".".join(module.split(".")[:2])


def import_edges(modules) -> dict[tuple[str, str], list[str]]:
    """(importing node, imported node) -> ['module:line imports module', ...], between distinct nodes."""
    edges = defaultdict(list)
    for name, (path, source) in modules.items():
        for target, line in imported_modules(name, source, modules):
            if node_of(name) != node_of(target) and node_of(target) != "mcl":
                edges[node_of(name), node_of(target)].append(f"{path}:{line} imports {target}")
    return dict(edges)


# ---------------------------------------------------------------------------
# checkers: each returns a list of offenders (empty when the rule holds)

def upward_imports(modules, layers=LAYERS) -> list[str]:
    """Imports from a higher layer than the importer's; subpackages and modules in no layer are offenders too."""
    rank = {node: i for i, layer in enumerate(layers) for node in layer}
    bad = [f"{n} is in no layer" for n in sorted({node_of(m) for m in modules} - {"mcl"} - set(rank))]
    for (src, dst), where in sorted(import_edges(modules).items()):
        if src in rank and dst in rank and rank[dst] > rank[src]:
            bad += [f"{src} (layer {rank[src]}) -> {dst} (layer {rank[dst]}): {w}" for w in where]
    return bad


def find_cycle(edges) -> list[str]:
    """One import cycle among the nodes, as [a, b, ..., a], or [] if there is none (depth-first search)."""
    graph = defaultdict(set)
    for src, dst in edges:
        graph[src].add(dst)
    state, stack = {}, []  # state: 1 on the current path, 2 finished

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def code_lines(source: str) -> set[int]:
    """Numbers of the lines holding code: not blank and not only a comment (lines of strings count)."""
    lines = source.splitlines()
    comment_only = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                    if tok.type == tokenize.COMMENT and not lines[tok.start[0] - 1][:tok.start[1]].strip()}
    return {i for i, line in enumerate(lines, 1) if line.strip() and i not in comment_only}


def docstring_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[int]:
    """Line numbers of ``fn``'s docstring (empty without one)."""
    first = fn.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return set(range(first.lineno, first.end_lineno + 1))
    return set()


def long_functions(modules, limit=MAX_FUNCTION_LINES) -> list[str]:
    """Functions (methods and nested functions too) with more than ``limit`` code lines, def line to end,
    their docstring left out."""
    bad = []
    for name, (path, source) in modules.items():
        code = code_lines(source)

        def walk(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qualname = prefix + child.name
                    if not isinstance(child, ast.ClassDef):
                        doc = docstring_lines(child)
                        n = sum(1 for i in range(child.lineno, child.end_lineno + 1) if i in code and i not in doc)
                        if n > limit:
                            bad.append(f"{path}:{child.lineno} {qualname} ({n} code lines)")
                    walk(child, qualname + ".")
                else:
                    walk(child, prefix)

        walk(parse(source), "")
    return bad


def long_files(modules, limit=MAX_FILE_LINES) -> list[str]:
    return [f"{path} ({n} lines)" for path, source in modules.values() if (n := len(source.splitlines())) > limit]


def large_subpackages(modules, limit=MAX_SUBPACKAGE_SHARE) -> list[str]:
    """Subpackages (not top-level modules) holding more than ``limit`` of all the package's lines."""
    lines, total = defaultdict(int), 0
    for path, source in modules.values():
        n = len(source.splitlines())
        total += n
        if len(path.parts) > 2:  # mcl/<subpackage>/...
            lines[path.parts[1]] += n
    return [f"{sub}: {n} of {total} lines ({n / total:.0%})" for sub, n in sorted(lines.items()) if n > limit * total]


def top_level_names(source: str) -> set[str]:
    """Functions, classes and assigned names at module level; dunder names (``__all__`` too) left out."""
    names = set()
    for node in parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


def shared_names(modules, allowed=ALLOWED_SHARED_NAMES) -> list[str]:
    """Names defined at module level in two or more modules, unless ``allowed`` lists exactly those modules."""
    where = defaultdict(set)
    for name, (_, source) in modules.items():
        for n in top_level_names(source):
            where[n].add(name)
    return [f"{n}: {', '.join(sorted(mods))}" for n, mods in sorted(where.items())
            if len(mods) > 1 and allowed.get(n) != mods]


# ---------------------------------------------------------------------------
# the rules on mcl

mcl_modules = functools.cache(read_package)  # this checkout's mcl, read once


def test_package_is_read():
    assert {"mcl.cli", "mcl.config", "mcl.data.generator", "mcl.report.write"} <= set(mcl_modules())
    edges = import_edges(mcl_modules())
    assert ("mcl.cli", "mcl.config") in edges and ("mcl.data", "mcl.config") in edges


def test_imports_follow_the_layers():
    bad = upward_imports(mcl_modules())
    assert not bad, "imports from a higher layer (LAYERS in tests/test_structure.py):\n" + "\n".join(bad)


def test_no_import_cycle_between_subpackages():
    cycle = find_cycle(import_edges(mcl_modules()))
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_no_long_function():
    bad = long_functions(mcl_modules())
    assert not bad, f"functions over {MAX_FUNCTION_LINES} code lines:\n" + "\n".join(bad)


def test_no_long_file():
    bad = long_files(mcl_modules())
    assert not bad, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(bad)


def test_no_subpackage_dominates():
    bad = large_subpackages(mcl_modules())
    assert not bad, f"subpackages over {MAX_SUBPACKAGE_SHARE:.0%} of the package:\n" + "\n".join(bad)


def test_no_name_defined_in_two_modules():
    bad = shared_names(mcl_modules())
    assert not bad, "module-level names defined in several modules (ALLOWED_SHARED_NAMES for deliberate ones):\n" \
        + "\n".join(bad)


# ---------------------------------------------------------------------------
# each checker catches a synthetic offender

def write_package(root: Path, files: dict[str, str]) -> dict[str, tuple[Path, str]]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return read_package(root)


def test_checkers_catch_upward_import_and_cycle(tmp_path):
    modules = write_package(tmp_path, {
        "mcl/__init__.py": "",
        "mcl/config.py": "def load():\n    from mcl.data import store\n",  # layer 0 -> layer 1, in a function
        "mcl/data/__init__.py": "",
        "mcl/data/store.py": "from ..config import load\n",  # relative import, down: fine
        "mcl/models/__init__.py": "from mcl import data\n",
    })
    edges = import_edges(modules)
    assert set(edges) == {("mcl.config", "mcl.data"), ("mcl.data", "mcl.config"), ("mcl.models", "mcl.data")}
    assert upward_imports(modules) == ["mcl.config (layer 0) -> mcl.data (layer 1): mcl/config.py:2 imports mcl.data",
                                     "mcl.config (layer 0) -> mcl.data (layer 1): mcl/config.py:2 imports mcl.data.store"]
    assert find_cycle(edges) in (["mcl.config", "mcl.data", "mcl.config"], ["mcl.data", "mcl.config", "mcl.data"])
    assert find_cycle({("mcl.models", "mcl.data"): [], ("mcl.data", "mcl.config"): []}) == []
    assert upward_imports({**modules, "mcl.new": (Path("mcl/new.py"), "")})[0] == "mcl.new is in no layer"


def test_checkers_catch_long_function_file_and_subpackage(tmp_path):
    body = "".join(f"x{i} = {i}\n# comment\n\n" for i in range(MAX_FUNCTION_LINES))
    short = "".join(f"x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    modules = write_package(tmp_path, {
        "mcl/__init__.py": "",
        "mcl/big/__init__.py": "",
        "mcl/big/long.py": f"def outer():\n    def inner():\n{textwrap.indent(body, ' ' * 8)}\n",  # 82 code lines
        "mcl/big/ok.py": f"def ok():\n{textwrap.indent(body, ' ' * 4)}",  # 81 code lines: def + 80
        "mcl/small.py": "x = 1\n" * 10,
        "mcl/documented.py": f'def documented():\n    """Doc\n\n    more doc\n    """\n{textwrap.indent(short, " " * 4)}',  # 80 code lines with the def, 84 with the docstring
    })
    assert long_functions(modules) == [f"mcl/big/long.py:1 outer ({MAX_FUNCTION_LINES + 2} code lines)",
                                       f"mcl/big/long.py:2 outer.inner ({MAX_FUNCTION_LINES + 1} code lines)",
                                       f"mcl/big/ok.py:1 ok ({MAX_FUNCTION_LINES + 1} code lines)"]
    assert long_functions(modules, limit=MAX_FUNCTION_LINES + 1) == [
        f"mcl/big/long.py:1 outer ({MAX_FUNCTION_LINES + 2} code lines)"]
    assert long_files(modules) == []
    assert long_files(modules, limit=100) == [f"mcl/big/long.py ({3 * MAX_FUNCTION_LINES + 3} lines)",
                                              f"mcl/big/ok.py ({3 * MAX_FUNCTION_LINES + 1} lines)"]
    assert [s.split(":")[0] for s in large_subpackages(modules)] == ["big"]
    assert large_subpackages(modules, limit=0.99) == []


def test_code_lines_skip_blanks_and_comments_not_strings():
    source = 'def f():\n    """Doc\n\n    # not a comment\n    """\n    # comment\n\n    return 1  # trailing\n'
    assert code_lines(source) == {1, 2, 4, 5, 8}
    assert docstring_lines(ast.parse(source).body[0]) == {2, 3, 4, 5}


def test_checker_catches_shared_names(tmp_path):
    modules = write_package(tmp_path, {
        "mcl/__init__.py": "__all__ = []\n",
        "mcl/a.py": "__all__ = ['f']\ndef f(): pass\nclass C: pass\nX, (Y, _z) = 1, (2, 3)\nif True:\n    W = 1\n",
        "mcl/b.py": "__all__ = ['f']\nfrom mcl.a import C\nasync def f(): pass\nY: int = 2\nW = 0\n",
        "mcl/c.py": "def analyse(): pass\n",
        "mcl/d.py": "def analyse(): pass\n",
    })
    assert top_level_names(modules["mcl.a"][1]) == {"f", "C", "X", "Y", "_z"}
    assert shared_names(modules) == ["Y: mcl.a, mcl.b", "analyse: mcl.c, mcl.d", "f: mcl.a, mcl.b"]
    assert shared_names(modules, allowed={"analyse": {"mcl.c", "mcl.d"}, "Y": {"mcl.a"}}) == [
        "Y: mcl.a, mcl.b", "f: mcl.a, mcl.b"]
