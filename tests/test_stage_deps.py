"""Every `mcl` source file a pipeline stage runs is one of its DVC deps, derived statically with ``ast``.

A stage whose cmd is ``python -m mcl.cli <command> ...`` runs the click command's function in
mcl/cli.py, plus the code of mcl/cli.py outside the command functions (module level, helpers
and the group callbacks, which run for every command). From the imports found there, every
import of every reached module (module level and inside functions) is followed; importing
``mcl.a.b`` also runs ``mcl/__init__.py`` and ``mcl/a/__init__.py``. Each reached file must be
a dep of the stage: the file itself or a folder that holds it. Nothing under mcl/ is imported.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from test_structure import imported_modules, read_package

ROOT = Path(__file__).parents[1]
CLI = "mcl.cli"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Overrides the conftest fixture of the same name: these tests only parse source, no torch."""
    yield


def decorator_call(fn: ast.FunctionDef, method: str) -> tuple[str, ast.Call] | None:
    """(object, call) of a ``@<object>.<method>(...)`` decorator of ``fn``, e.g. ('data', <call>) for @data.command."""
    for dec in fn.decorator_list:
        call = dec if isinstance(dec, ast.Call) else None
        func = call.func if call else dec
        if isinstance(func, ast.Attribute) and func.attr == method and isinstance(func.value, ast.Name):
            return func.value.id, call or ast.Call(func=func, args=[], keywords=[])
    return None


def command_name(fn: ast.FunctionDef, call: ast.Call) -> str:
    """The name click gives a command or group: its first argument, else the function name with '-' for '_'."""
    if call.args and isinstance(call.args[0], ast.Constant):
        return call.args[0].value
    return next((k.value.value for k in call.keywords if k.arg == "name"), fn.name.replace("_", "-"))


def cli_commands(source: str) -> dict[tuple[str, ...], ast.FunctionDef]:
    """Command path (e.g. ('generate',), ('data', 'card')) -> its function, for every click command in ``source``."""
    functions = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    groups = {fn.name: () for fn in functions if decorator_call(fn, "group") and decorator_call(fn, "group")[0] == "click"}
    for fn in functions:  # subgroups: @<group>.group(...)
        if (dec := decorator_call(fn, "group")) and dec[0] in groups:
            groups[fn.name] = groups[dec[0]] + (command_name(fn, dec[1]),)
    return {groups[dec[0]] + (command_name(fn, dec[1]),): fn
            for fn in functions if (dec := decorator_call(fn, "command")) and dec[0] in groups}


def stage_command(cmd: str, commands) -> tuple[str, ...] | None:
    """The command path a stage's cmd runs (``python -m mcl.cli data card X`` -> ('data', 'card')), or None."""
    words = shlex.split(cmd)
    if words[:3] != ["python", "-m", CLI]:
        return None
    for n in range(len(words) - 3, 0, -1):
        if tuple(words[3:3 + n]) in commands:
            return tuple(words[3:3 + n])
    raise AssertionError(f"{cmd!r}: no such command in mcl/cli.py")


def reached_modules(command: tuple[str, ...], modules) -> set[str]:
    """Every mcl module the command imports, transitively; mcl.cli and the packages' __init__ included."""
    source = modules[CLI][1]
    commands = cli_commands(source)
    skip = {fn.lineno for path, fn in commands.items() if path != command}  # other commands' bodies do not run
    runs = ast.Module([n for n in ast.parse(source).body if getattr(n, "lineno", None) not in skip], [])
    todo = {CLI} | {m for m, _ in imported_modules(CLI, ast.unparse(runs), modules)}
    seen = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the module and the packages above it
            module = ".".join(parts[:i])
            if module in modules and module not in seen:
                seen.add(module)
                if module != CLI:
                    todo |= {m for m, _ in imported_modules(module, modules[module][1], modules)}
    return seen


def uncovered(files, deps) -> list[str]:
    """Files (paths relative to the repository) that no dep names, as a file or as a folder above it."""
    folders = [d.rstrip("/") + "/" for d in deps]
    return sorted(f for f in map(str, files) if f not in deps and not f.startswith(tuple(folders)))


def mcl_stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """Stage -> (cmd, deps under mcl/) for the stages of ``dvc_yaml`` that run the mcl CLI."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: (" ".join(s["cmd"].split()), [d for d in s.get("deps", []) if d.startswith("mcl/")])
            for name, s in stages.items() if s["cmd"].split()[:3] == ["python", "-m", CLI]}


# ---------------------------------------------------------------------------

def test_every_imported_mcl_file_is_a_stage_dep():
    modules = read_package(ROOT)
    commands = cli_commands(modules[CLI][1])
    missing = []
    for stage, (cmd, deps) in mcl_stages().items():
        files = [modules[m][0] for m in reached_modules(stage_command(cmd, commands), modules)]
        missing += [f"{stage}: {f}" for f in uncovered(files, deps)]
    assert not missing, "mcl files a stage imports but does not list in its deps (dvc.yaml):\n" + "\n".join(missing)


def test_every_cli_stage_is_found():
    commands = cli_commands(read_package(ROOT)[CLI][1])
    found = {stage: stage_command(cmd, commands) for stage, (cmd, _) in mcl_stages().items()}
    assert {"generate", "dataset_card", "train-share", "evaluate", "finetune", "analyse", "report"} <= set(found)
    assert found["generate"] == ("generate",) and found["dataset_card"] == ("data", "card")
    assert found["evaluate"] == found["evaluate-oracle"] == ("evaluate",)


def test_derivation_on_known_cases():
    modules = read_package(ROOT)
    generate = reached_modules(("generate",), modules)
    assert {"mcl", "mcl.cli", "mcl.config", "mcl.errors", "mcl.data", "mcl.data.generator", "mcl.data.store"} <= generate
    assert not {m for m in generate if m.startswith(("mcl.models", "mcl.report", "mcl.analysis", "mcl.bench"))}
    card = reached_modules(("data", "card"), modules)
    assert {"mcl.data.card", "mcl.plots"} <= card and "mcl.data.card" not in generate


def test_derivation_on_a_synthetic_cli(tmp_path):
    files = {
        "mcl/__init__.py": "",
        "mcl/cli.py": ("import click\nfrom mcl.config import load\n\n"
                       "def _errors():\n    from mcl.errors import E\n\n"
                       "@click.group()\ndef cli(): pass\n\n"
                       "@cli.group()\ndef data(): pass\n\n"
                       "@data.command('card')\ndef data_card():\n    from mcl.data import card\n\n"
                       "@cli.command()\ndef train_all():\n    import mcl.training.loop\n"),
        "mcl/config.py": "", "mcl/errors.py": "", "mcl/plots.py": "",
        "mcl/data/__init__.py": "", "mcl/data/card.py": "def f():\n    from ..plots import plot\n",
        "mcl/training/__init__.py": "", "mcl/training/loop.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = read_package(tmp_path)
    commands = cli_commands(modules[CLI][1])
    assert set(commands) == {("data", "card"), ("train-all",)}
    assert stage_command("python -m mcl.cli data card store.zarr --out x", commands) == ("data", "card")
    assert stage_command("python -m dvc repro", commands) is None
    card = reached_modules(("data", "card"), modules)
    assert card == {"mcl", "mcl.cli", "mcl.config", "mcl.errors", "mcl.data", "mcl.data.card", "mcl.plots"}
    assert reached_modules(("train-all",), modules) == {"mcl", "mcl.cli", "mcl.config", "mcl.errors",
                                                        "mcl.training", "mcl.training.loop"}
    paths = [modules[m][0] for m in card]
    assert uncovered(paths, ["mcl/data", "mcl/cli.py", "mcl/config.py", "mcl/errors.py"]) == [
        "mcl/__init__.py", "mcl/plots.py"]
    assert uncovered(paths, ["mcl/data/", "mcl/cli.py", "mcl/config.py", "mcl/errors.py", "mcl/__init__.py",
                             "mcl/plots.py"]) == []
    assert uncovered(["mcl/database.py"], ["mcl/data"]) == ["mcl/database.py"]
