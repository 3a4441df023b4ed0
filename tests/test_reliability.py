"""Bad input, refused clearly: a table-driven proof over params, stores and checkpoints, and the source of
docs/reliability.md.

Design
------
* Every bad input is one entry in an ordered table: ``PARAMS_CASES``, ``STORE_CASES``, ``CHECKPOINT_CASES``.
  Each entry says how to make the input and which words its message must contain (the key path or file,
  and what is allowed or what is wrong).
* Every run happens in a fresh working directory holding only the bad input (and what the command needs
  besides it); the test compares its recursive listing before and after (nothing may be written) and
  requires exit code 2, empty stdout and exactly one stderr line ``Error: <message>``.
* Every (case, command) runs in-process through click's test runner: the same command objects and
  ``MclGroup`` error handling, milliseconds each since torch is already imported; warnings raised during the
  run (under Python's default filters) count as stderr lines, as they would in a real process.
* A subset also runs as real ``python -m mcl.cli`` subprocesses (``SUBPROCESS_*``), which must pass the same
  checks with the same exit code and message: for params every case against ``train`` and four cases
  against every stage (about 0.3 s each: validation happens before any heavy import); a few store and
  checkpoint cases (``mcl evaluate`` imports torch: several seconds of CPU each, so not all of them).
* Each category runs all its cases once per module (module-scoped fixtures; subprocesses two at a time in
  threads, no pytest-xdist needed) and the per-case tests look their outcome up, so the doc test, which
  needs every outcome, works the same under ``-k``.
* ``test_reliability_doc`` renders docs/reliability.md from the in-process outcomes in table order and
  compares it with the committed file; ``--update-docs`` (tests/conftest.py) rewrites it instead. Temporary
  paths become ``<tmp>`` and SHA-256 prefixes ``<sha256>`` so the file is stable.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import pickle
import random
import re
import shutil
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

REPO = Path(__file__).parents[1]
DOC = REPO / "docs" / "reliability.md"
DOC_COMMAND = "uv run pytest tests/test_reliability.py --update-docs"
WORKERS = 2  # subprocesses at a time (the CI machine has 2 cores)

# Stage subcommands as dvc.yaml runs them (each validates params.yaml first).
STAGES: dict[str, list[str]] = {
    "generate": ["generate"],
    "dataset_card": ["data", "card", "data/episodes.zarr", "--params", "params.yaml"],
    "train": ["train", "--arm", "share", "--seed", "0"],
    "evaluate": ["evaluate", "--arm", "share", "--seed", "0"],
    "finetune": ["finetune", "--arm", "share", "--seed", "0"],
    "summarize": ["summarize"],
    "analyse": ["analyse"],
    "report": ["report"],
}
EVALUATE = STAGES["evaluate"]


# ---------------------------------------------------------------------------
# running a command and recording what happened


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    cwd: Path
    before: list[str]
    after: list[str]
    detail: str = ""  # in-process: traceback of an unexpected exception

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()

    @property
    def message(self) -> str:
        """The (last) ``Error:`` line without its prefix; all of stderr, joined, when there is none."""
        errors = [line for line in self.lines if line.startswith("Error: ")]
        if errors:
            return errors[-1][len("Error: "):]
        return " / ".join(self.lines) or f"(no message; stdout: {self.stdout.strip()[:200]!r})"

    @property
    def other_lines(self) -> int:
        """stderr lines besides the error line (warnings, tracebacks)."""
        return len(self.lines) - (1 if any(line.startswith("Error: ") for line in self.lines) else 0)


def listing(root: Path) -> list[str]:
    """Every path under ``root``, relative, directories with a trailing slash."""
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def _python_default_warning_filters() -> None:
    """The filters a plain ``python`` process starts with (no -W, no dev mode)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def invoke_in_process(args: list[str], cwd: Path) -> Outcome:
    """``mcl ARGS`` through click's test runner in ``cwd``; warnings it raises are added to its stderr."""
    from click.testing import CliRunner

    from mcl.cli import cli

    before = listing(cwd)
    with contextlib.chdir(cwd), warnings.catch_warnings(record=True) as caught:
        _python_default_warning_filters()
        result = CliRunner().invoke(cli, args, prog_name="mcl")
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    detail = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(*result.exc_info))
    return Outcome(result.exit_code, result.stdout, shown + result.stderr, cwd, before, listing(cwd), detail)


def run_subprocesses(jobs: list[tuple[list[str], Path]], run_mcl) -> list[Outcome]:
    """Run ``python -m mcl.cli ARGS`` in each ``cwd``, ``WORKERS`` at a time; outcomes in job order."""
    def one(job):
        args, cwd = job
        before = listing(cwd)
        proc = run_mcl(args, cwd=cwd, timeout=300)
        return Outcome(proc.returncode, proc.stdout, proc.stderr, cwd, before, listing(cwd))

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(one, jobs))


Key = tuple[str, str]  # (case id, command label)


@dataclass
class Runs:
    in_process: dict[Key, Outcome]
    subprocess: dict[Key, Outcome]
    roots: list[Path]


def execute(root: Path, keys: list[Key], subprocess_keys: list[Key], prepare: Callable[[Key, Path], Path],
            args_of: Callable[[Key], list[str]], run_mcl) -> Runs:
    """Every key in-process, ``subprocess_keys`` again as subprocesses; ``prepare(key, folder) -> cwd`` makes
    a fresh working directory for each run."""
    in_process = {key: invoke_in_process(args_of(key), prepare(key, root / "in-process" / "-".join(key)))
                  for key in keys}
    jobs = [(args_of(key), prepare(key, root / "subprocess" / "-".join(key))) for key in subprocess_keys]
    return Runs(in_process, dict(zip(subprocess_keys, run_subprocesses(jobs, run_mcl))), [root])


def normalise(message: str, roots: list[Path]) -> str:
    for root in roots:
        for form in {str(root), os.path.realpath(root)}:
            message = message.replace(form, "<tmp>")
    return re.sub(r"\b[0-9a-f]{12}\.\.\.", "<sha256>...", message)


def assert_refused(outcome: Outcome, needles: tuple[str, ...], what: str) -> None:
    """Exit code 2, one ``Error:`` line on stderr containing every needle, nothing on stdout, nothing written."""
    assert outcome.code == 2, f"{what}: exit code {outcome.code}\n{outcome.stderr}\n{outcome.detail}"
    assert len(outcome.lines) == 1 and outcome.lines[0].startswith("Error: "), \
        f"{what}: stderr is not one 'Error:' line:\n{outcome.stderr}"
    line = outcome.lines[0]
    for needle in needles:
        assert needle in line, f"{what}: {needle!r} missing from {line!r}"
    assert not re.search(r"0x[0-9a-fA-F]{4,}", line), f"{what}: memory address in {line!r}"
    assert outcome.stdout == "", f"{what}: printed {outcome.stdout!r}"
    added = sorted(set(outcome.after) - set(outcome.before))
    removed = sorted(set(outcome.before) - set(outcome.after))
    assert not added and not removed, \
        f"{what}: working directory changed: {len(added)} added {added[:5]}, {len(removed)} removed {removed[:5]}"


def assert_same_as_in_process(runs: Runs, key: Key) -> None:
    sub, inp = runs.subprocess[key], runs.in_process[key]
    assert (sub.code, normalise(sub.message, runs.roots)) == (inp.code, normalise(inp.message, runs.roots)), key


def code(text: str) -> str:
    """A markdown code span holding ``text`` (fence longer than any backtick run inside; pipes escaped)."""
    text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# ---------------------------------------------------------------------------
# params cases


def _walk(raw: dict, dotted: str) -> tuple[dict, str]:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    return node, leaf


def set_key(dotted: str, value) -> Callable[[dict], None]:
    def edit(raw):
        node, leaf = _walk(raw, dotted)
        assert leaf in node, dotted
        node[leaf] = value
    return edit


def add_key(dotted: str, value) -> Callable[[dict], None]:
    def edit(raw):
        node, leaf = _walk(raw, dotted)
        assert leaf not in node, dotted
        node[leaf] = value
    return edit


def del_key(dotted: str) -> Callable[[dict], None]:
    def edit(raw):
        node, leaf = _walk(raw, dotted)
        del node[leaf]
    return edit


def duplicate_train_steps(text: str) -> str:
    assert text.count("\ntrain:\n") == 1
    return text.replace("\ntrain:\n", "\ntrain:\n  steps: 5\n")


def unclosed_bracket(text: str) -> str:
    assert text.count("  encoder: transformer\n") == 1
    return text.replace("  encoder: transformer\n", "  encoder: [transformer\n")


@dataclass(frozen=True)
class ParamsCase:
    id: str
    input: str                 # the "bad input" cell (markdown)
    needles: tuple[str, ...]   # the message must contain each: the key path and what is allowed
    edit: Callable[[dict], None] | None = None  # change the valid tiny params (a raw dict) ...
    text: Callable[[str], str] | None = None    # ... or the text of params.yaml
    absent: bool = False                        # no params.yaml at all


PARAMS_CASES = [
    ParamsCase("unknown-top-key", "unknown top-level key `extra: 1`",
               ("unknown key extra", "allowed in top level: data, model, loss, train, eval, finetune, analysis"),
               edit=add_key("extra", 1)),
    ParamsCase("unknown-nested-key", "unknown nested key `loss.share.foo: 1`",
               ("unknown key loss.share.foo", "allowed in loss.share: k, detach, ema, repel, eps"),
               edit=add_key("loss.share.foo", 1)),
    ParamsCase("type-string-for-int", "wrong type: `data.demos: three`",
               ("data.demos", "must be an integer >= 1 and <= 16", "'three'"), edit=set_key("data.demos", "three")),
    ParamsCase("type-bool-for-int", "wrong type: `train.steps: true`",
               ("train.steps", "must be an integer >= 1", "True"), edit=set_key("train.steps", True)),
    ParamsCase("type-scalar-for-list", "wrong type: `train.seeds: 0` (not a list)",
               ("train.seeds", "must be a non-empty list of integers"), edit=set_key("train.seeds", 0)),
    ParamsCase("beta-negative", "out of range: `loss.beta: -0.5`",
               ("loss.beta", "must be a number >= 0.0", "-0.5"), edit=set_key("loss.beta", -0.5)),
    ParamsCase("demos-zero", "out of range: `data.demos: 0`",
               ("data.demos", "must be an integer >= 1 and <= 16", "got 0"), edit=set_key("data.demos", 0)),
    ParamsCase("alpha-nan", "not finite: `loss.alpha: .nan`",
               ("loss.alpha", "must be a number >= 0.0", "nan"), edit=set_key("loss.alpha", float("nan"))),
    ParamsCase("encoder-lstm", "unknown choice: `model.encoder: lstm`",
               ("model.encoder", "one of transformer, gru", "'lstm'"), edit=set_key("model.encoder", "lstm")),
    ParamsCase("device-tpu", "unknown choice: `train.device: tpu`",
               ("train.device", "one of auto, cpu, cuda", "'tpu'"), edit=set_key("train.device", "tpu")),
    ParamsCase("share-k-vs-group-size", "contradiction: `loss.share.k: 3` with `train.group_size: 3` "
               "(k >= episodes per group)", ("loss.share.k", "< train.group_size (3)", "got 3"),
               edit=set_key("loss.share.k", 3)),
    ParamsCase("d-model-vs-heads", "contradiction: `model.d_model: 15` with `model.n_heads: 2`",
               ("model.d_model", "divisible by model.n_heads (2)", "got 15"), edit=set_key("model.d_model", 15)),
    ParamsCase("format-vs-store", "contradiction: `data.format: hdf5` with `data.store: data/episodes.zarr`",
               ("data.store", "must end with .h5 when data.format is hdf5"), edit=set_key("data.format", "hdf5")),
    ParamsCase("schedule-end", "contradiction: `loss.schedule.beta` `linear_warmup` with `end: 0` (= start)",
               ("loss.schedule.beta.end", "must be > start (0)", "got 0"), edit=set_key("loss.schedule.beta.end", 0)),
    ParamsCase("missing-key", "missing key: `train.lr` deleted", ("missing key train.lr",), edit=del_key("train.lr")),
    ParamsCase("missing-section", "missing section: `model` deleted", ("missing key model",), edit=del_key("model")),
    ParamsCase("section-not-mapping", "section is not a mapping: `model: 5`",
               ("model must be a mapping with keys encoder, demo_embed", "got 5"), edit=set_key("model", 5)),
    ParamsCase("duplicate-key", "duplicate key: a second `steps:` line in `train`",
               ("duplicate key train.steps", "lines"), text=duplicate_train_steps),
    ParamsCase("yaml-syntax", "YAML syntax error: `encoder: [transformer` (unclosed `[`)",
               ("params.yaml: not valid YAML at line",), text=unclosed_bracket),
    ParamsCase("empty-file", "empty params.yaml",
               ("top level must be a mapping with keys data, model", "got None"), text=lambda _: ""),
    ParamsCase("no-file", "no params.yaml in the working directory",
               ("params.yaml: cannot read", "No such file or directory"), absent=True),
]
PARAMS_BY_ID = {c.id: c for c in PARAMS_CASES}
assert len(PARAMS_BY_ID) == len(PARAMS_CASES)
PARAMS_RUNS = [(c.id, stage) for c in PARAMS_CASES for stage in STAGES]
SUBPROCESS_EVERY_STAGE = ("unknown-nested-key", "beta-negative", "share-k-vs-group-size", "no-file")
SUBPROCESS_PARAMS_RUNS = [(cid, stage) for cid, stage in PARAMS_RUNS
                          if stage == "train" or cid in SUBPROCESS_EVERY_STAGE]


def write_bad_params(case: ParamsCase, cwd: Path, write_tiny_params) -> None:
    if case.absent:
        return
    path = write_tiny_params(cwd / "params.yaml", {"data.store": "data/episodes.zarr"})
    if case.edit is not None:
        raw = yaml.safe_load(path.read_text())
        case.edit(raw)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    if case.text is not None:
        path.write_text(case.text(path.read_text()))


@pytest.fixture(scope="module")
def params_runs(tmp_path_factory, write_tiny_params, run_mcl) -> Runs:
    def prepare(key: Key, folder: Path) -> Path:
        folder.mkdir(parents=True)
        write_bad_params(PARAMS_BY_ID[key[0]], folder, write_tiny_params)
        return folder

    return execute(tmp_path_factory.mktemp("reliability_params"), PARAMS_RUNS, SUBPROCESS_PARAMS_RUNS, prepare,
                   lambda key: STAGES[key[1]], run_mcl)


def _ids(keys: list[Key]) -> list[str]:
    return ["-".join(key) for key in keys]


@pytest.mark.parametrize("key", PARAMS_RUNS, ids=_ids(PARAMS_RUNS))
def test_bad_params_refused(params_runs, key):
    """Exit code 2, one line naming the key path and what is allowed, nothing written."""
    assert_refused(params_runs.in_process[key], PARAMS_BY_ID[key[0]].needles, "/".join(key))


@pytest.mark.parametrize("key", SUBPROCESS_PARAMS_RUNS, ids=_ids(SUBPROCESS_PARAMS_RUNS))
def test_bad_params_refused_subprocess(params_runs, key):
    """Real `python -m mcl.cli` processes: the same refusal, with the same exit code and message."""
    assert_refused(params_runs.subprocess[key], PARAMS_BY_ID[key[0]].needles, "/".join(key) + " (subprocess)")
    assert_same_as_in_process(params_runs, key)


# ---------------------------------------------------------------------------
# store cases


def _zarr(path: Path):
    import zarr

    return zarr.open_group(str(path), mode="r+", zarr_format=3)


def _h5(path: Path):
    import h5py

    return h5py.File(path, "r+")


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)


def make_zarr_schema(dst, src):
    _copy(src, dst)
    _zarr(dst).attrs["schema_version"] = 2


def make_zarr_foreign(dst, src):
    import zarr

    root = zarr.open_group(str(dst), mode="w", zarr_format=3)
    root.create_array("x", data=np.zeros(3, dtype=np.float32))


def make_zarr_split_unlisted(dst, src):
    _copy(src, dst)
    g = _zarr(dst)
    attrs = dict(g.attrs)
    g.attrs.update(splits={k: v for k, v in attrs["splits"].items() if k != "test"},
                   checksums={k: v for k, v in attrs["checksums"].items() if k != "test"})
    del g["test"]


def make_zarr_group_deleted(dst, src):
    _copy(src, dst)
    del _zarr(dst)["test"]


def make_zarr_value_changed(dst, src):
    _copy(src, dst)
    arr = _zarr(dst)["test"]["inputs"]
    arr[0, 0, 0, 0] = (int(arr[0, 0, 0, 0]) + 1) % 10


def _zarr_chunk(store: Path, split: str, name: str) -> Path:
    chunks = [p for p in (store / split / name / "c").rglob("*") if p.is_file()]
    assert len(chunks) == 1, chunks
    return chunks[0]


def make_zarr_chunk_deleted(dst, src):
    _copy(src, dst)
    _zarr_chunk(dst, "test", "args").unlink()


def make_zarr_chunk_byte(dst, src):
    _copy(src, dst)
    chunk = _zarr_chunk(dst, "test", "inputs")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def make_zarr_dtype(dst, src):
    _copy(src, dst)
    g = _zarr(dst)["test"]
    labels = g["labels"][...].astype(np.int32)
    g.create_array("labels", data=labels, chunks=labels.shape, overwrite=True)


def make_zarr_shape(dst, src):
    _copy(src, dst)
    g = _zarr(dst)["test"]
    program = g["program"][...][:-1].copy()
    g.create_array("program", data=program, chunks=program.shape, overwrite=True)


def make_zarr_array_deleted(dst, src):
    _copy(src, dst)
    del _zarr(dst)["test"]["program"]


def make_zarr_bad_json(dst, src):
    _copy(src, dst)
    (dst / "zarr.json").write_text("{ not json")


def make_h5_truncated(dst, src):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def make_h5_schema(dst, src):
    _copy(src, dst)
    with _h5(dst) as f:
        f.attrs["mcl"] = json.dumps({**json.loads(f.attrs["mcl"]), "schema_version": 2})


def make_h5_foreign(dst, src):
    import h5py

    with h5py.File(dst, "w") as f:
        f.create_dataset("x", data=np.zeros(3, dtype=np.float32))


def make_h5_value_changed(dst, src):
    _copy(src, dst)
    with _h5(dst) as f:
        d = f["test"]["inputs"]
        d[0, 0, 0, 0] = (int(d[0, 0, 0, 0]) + 1) % 10


def make_h5_dtype(dst, src):
    _copy(src, dst)
    with _h5(dst) as f:
        labels = f["test"]["labels"][...].astype(np.int32)
        del f["test"]["labels"]
        f["test"].create_dataset("labels", data=labels)


def make_h5_group_deleted(dst, src):
    _copy(src, dst)
    with _h5(dst) as f:
        del f["test"]


INFO, CARD = "info", "card"
ZARR_NAME, H5_NAME = "episodes.zarr", "episodes.h5"


@dataclass(frozen=True)
class StoreCase:
    id: str
    input: str
    fmt: str                               # "zarr" | "hdf5": which good store ``make`` starts from
    make: Callable[[Path, Path], None]     # make(bad_store_path, good_store_path)
    needles: tuple[str, ...]               # besides the store's file name, which every message must hold
    commands: tuple[str, ...] = (INFO,)    # INFO, CARD and/or "evaluate"
    name: str = ""                         # the bad store's file name (default episodes.zarr / episodes.h5)

    @property
    def store_name(self) -> str:
        return self.name or (ZARR_NAME if self.fmt == "zarr" else H5_NAME)


STORE_CASES = [
    StoreCase("zarr-missing", "Zarr store path does not exist", "zarr", lambda dst, src: None,
              ("store not found",), (INFO, CARD, "evaluate")),
    StoreCase("zarr-plain-file", "`episodes.zarr` is a plain file", "zarr",
              lambda dst, src: dst.write_text("not a store\n"), ("not a Zarr store", "a file")),
    StoreCase("zarr-empty-dir", "`episodes.zarr` is an empty directory", "zarr",
              lambda dst, src: dst.mkdir(), ("not a Zarr v3 store", "no zarr.json")),
    StoreCase("zarr-bad-metadata", "root `zarr.json` is not valid JSON", "zarr", make_zarr_bad_json,
              ("unreadable store metadata", "JSONDecodeError")),
    StoreCase("zarr-foreign", "a Zarr group that is not an mcl store (no attributes)", "zarr", make_zarr_foreign,
              ("not an mcl episode store", "no schema_version")),
    StoreCase("zarr-schema", "wrong `schema_version` (2)", "zarr", make_zarr_schema,
              ("schema_version 2", "this mcl reads 1"), (INFO, "evaluate")),
    StoreCase("zarr-split-unlisted", "split `test` missing (not in the store's attributes)", "zarr",
              make_zarr_split_unlisted, ("split 'test' missing", "has train, val, dev, fewshot, novel2, probe"), ("evaluate",)),
    StoreCase("zarr-group-deleted", "split `test` listed but its group deleted", "zarr", make_zarr_group_deleted,
              ("split 'test'", "group is missing"), (INFO, "evaluate")),
    StoreCase("zarr-array-deleted", "array `test/program` deleted", "zarr", make_zarr_array_deleted,
              ("test/program", "missing")),
    StoreCase("zarr-value-changed", "checksum mismatch: one value of `test/inputs` changed (zarr API)", "zarr",
              make_zarr_value_changed, ("split 'test'", "fails its checksum"), (INFO, CARD, "evaluate")),
    StoreCase("zarr-chunk-deleted", "chunk file of `test/args` deleted (zarr reads fill values)", "zarr",
              make_zarr_chunk_deleted, ("split 'test'", "fails its checksum")),
    StoreCase("zarr-chunk-byte", "one byte flipped in the compressed chunk of `test/inputs`", "zarr",
              make_zarr_chunk_byte, ("'test'",)),
    StoreCase("zarr-dtype", "wrong dtype: `test/labels` int32", "zarr", make_zarr_dtype,
              ("test/labels is int32", "expected uint8")),
    StoreCase("zarr-shape", "wrong shape: `test/program` one row short", "zarr", make_zarr_shape,
              ("test/program is int16[31, 3]", "expected int16[32, 3]")),
    StoreCase("unknown-suffix", "store path with an unknown suffix (`episodes.npz`)", "zarr",
              lambda dst, src: _copy(src, dst), ("unknown store format", ".zarr directory or an .h5 file"),
              name="episodes.npz"),
    StoreCase("h5-plain-file", "`episodes.h5` is a text file", "hdf5",
              lambda dst, src: dst.write_text("not a store\n"), ("not an HDF5 file",)),
    StoreCase("h5-directory", "`episodes.h5` is a directory", "hdf5", lambda dst, src: dst.mkdir(),
              ("not an HDF5 file", "a directory")),
    StoreCase("h5-truncated", "HDF5 file truncated to half its size", "hdf5", make_h5_truncated,
              ("unreadable store metadata", "truncated file")),
    StoreCase("h5-foreign", "an HDF5 file that is not an mcl store", "hdf5", make_h5_foreign,
              ("not an mcl episode store", "no 'mcl' attribute")),
    StoreCase("h5-schema", "wrong `schema_version` (2)", "hdf5", make_h5_schema, ("schema_version 2", "this mcl reads 1")),
    StoreCase("h5-group-deleted", "split `test` listed but its group deleted", "hdf5", make_h5_group_deleted,
              ("split 'test'", "group is missing")),
    StoreCase("h5-value-changed", "checksum mismatch: one value of `test/inputs` changed (h5py)", "hdf5",
              make_h5_value_changed, ("split 'test'", "fails its checksum")),
    StoreCase("h5-dtype", "wrong dtype: `test/labels` int32", "hdf5", make_h5_dtype,
              ("test/labels is int32", "expected uint8")),
]
STORE_BY_ID = {c.id: c for c in STORE_CASES}
assert len(STORE_BY_ID) == len(STORE_CASES)
STORE_RUNS = [(c.id, command) for c in STORE_CASES for command in c.commands]
SUBPROCESS_STORE_RUNS = [("zarr-missing", INFO), ("zarr-empty-dir", INFO), ("zarr-schema", INFO),
                         ("zarr-value-changed", INFO), ("zarr-value-changed", CARD),
                         ("zarr-split-unlisted", "evaluate"), ("h5-truncated", INFO), ("h5-value-changed", INFO)]
assert set(SUBPROCESS_STORE_RUNS) <= set(STORE_RUNS)


def store_args(case: StoreCase, command: str) -> list[str]:
    if command == INFO:
        return ["data", "info", case.store_name]
    if command == CARD:
        return ["data", "card", case.store_name, "--out", "docs/dataset.md", "--figures", "docs/figures"]
    return EVALUATE


@pytest.fixture(scope="module")
def h5_tiny_store(tiny_store, tmp_path_factory) -> Path:
    """``tiny_store``'s content in an HDF5 file (read-only use)."""
    from mcl.data.store import open_store, write_store

    src = open_store(tiny_store)
    path = tmp_path_factory.mktemp("reliability_h5") / H5_NAME
    write_store(path, src.load_all(), src.attrs)
    return path


@pytest.fixture(scope="module")
def store_runs(tmp_path_factory, tiny_store, h5_tiny_store, tiny_trained_run, write_tiny_params, run_mcl) -> Runs:
    def prepare(key: Key, folder: Path) -> Path:
        case, command = STORE_BY_ID[key[0]], key[1]
        folder.mkdir(parents=True)
        case.make(folder / case.store_name, tiny_store if case.fmt == "zarr" else h5_tiny_store)
        if command == "evaluate":
            write_tiny_params(folder / "params.yaml", {"data.store": case.store_name})
            shutil.copytree(tiny_trained_run, folder / "models" / "share/seed0")
        return folder

    return execute(tmp_path_factory.mktemp("reliability_stores"), STORE_RUNS, SUBPROCESS_STORE_RUNS, prepare,
                   lambda key: store_args(STORE_BY_ID[key[0]], key[1]), run_mcl)


@pytest.mark.parametrize("key", STORE_RUNS, ids=_ids(STORE_RUNS))
def test_bad_store_refused(store_runs, key):
    """Exit code 2, one line naming the store file and the problem, nothing written."""
    case = STORE_BY_ID[key[0]]
    assert_refused(store_runs.in_process[key], (case.store_name, *case.needles), "/".join(key))


@pytest.mark.parametrize("key", SUBPROCESS_STORE_RUNS, ids=_ids(SUBPROCESS_STORE_RUNS))
def test_bad_store_refused_subprocess(store_runs, key):
    case = STORE_BY_ID[key[0]]
    assert_refused(store_runs.subprocess[key], (case.store_name, *case.needles), "/".join(key) + " (subprocess)")
    assert_same_as_in_process(store_runs, key)


def test_store_cases_cover_the_issue():
    """Missing split, schema_version, checksum, dtype, shape, missing path, not a store: zarr and hdf5."""
    ids = {c.id for c in STORE_CASES}
    for kind in ("plain-file", "schema", "group-deleted", "value-changed", "dtype"):
        assert {f"zarr-{kind}", f"h5-{kind}"} <= ids, kind
    assert {"zarr-missing", "zarr-split-unlisted", "zarr-shape", "zarr-empty-dir"} <= ids


# ---------------------------------------------------------------------------
# checkpoint cases


class RunsCodeOnLoad:
    """Unpickling this calls ``open(marker, 'w')``: what a crafted checkpoint could do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(best: Path) -> dict:
    import torch

    return torch.load(best, weights_only=True)


def make_truncated(best, marker):
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 2])


def make_random(best, marker):
    best.write_bytes(random.Random(0).randbytes(4096))


def make_json(best, marker):
    best.write_text(json.dumps({"format": "mcl-checkpoint-v1", "step": 8}))


def make_crafted_torch(best, marker):
    import torch

    torch.save({**_state(best), "payload": RunsCodeOnLoad(str(marker))}, best)


def make_crafted_pickle(best, marker):
    best.write_bytes(pickle.dumps(RunsCodeOnLoad(str(marker))))


def make_plain_torch(best, marker):
    import torch

    torch.save({"model": _state(best)["model"]}, best)


def make_missing_tensor(best, marker):
    import torch

    state = _state(best)
    weights = dict(state["model"])
    weights.pop(sorted(weights)[0])
    torch.save({**state, "model": weights}, best)


@dataclass(frozen=True)
class CheckpointCase:
    id: str
    input: str
    make: Callable[[Path, Path], None]  # make(best_pt, marker): corrupt a copy of a trained run's best.pt
    needles: tuple[str, ...]            # besides models/share/seed0/best.pt
    params: dict | None = None          # extra tiny params overrides
    absent: tuple[str, ...] = ()        # words the message must not contain
    crafted: bool = False               # the file runs code when unpickled unsafely: check the marker


CHECKPOINT_CASES = [
    CheckpointCase("truncated", "`best.pt` truncated to half its size", make_truncated,
                   ("truncated or corrupt checkpoint",)),
    CheckpointCase("empty", "`best.pt` empty (0 bytes)", lambda best, marker: best.write_bytes(b""),
                   ("empty file",)),
    CheckpointCase("random-bytes", "`best.pt` is 4 KiB of random bytes", make_random,
                   ("not a torch checkpoint",)),
    CheckpointCase("json", "`best.pt` is a JSON file", make_json, ("not a torch checkpoint",)),
    CheckpointCase("crafted-torch", "crafted: a real checkpoint plus an object whose unpickling calls "
                   "`open(marker, 'w')`", make_crafted_torch, ("refused", "not plain data", "never run code"),
                   crafted=True),
    CheckpointCase("crafted-pickle", "crafted: a bare pickle whose unpickling calls `open(marker, 'w')`",
                   make_crafted_pickle, ("not a torch checkpoint",), crafted=True),
    CheckpointCase("other-config", "trained with another model config (params now `model.d_model: 32`, "
                   "`model.h_dim: 12`)", lambda best, marker: None,
                   ("different model config", "model.d_model (checkpoint 16, params 32)",
                    "model.h_dim (checkpoint 24, params 12)"),
                   params={"model.d_model": 32, "model.h_dim": 12}, absent=("model.n_heads", "model.sae_dim")),
    CheckpointCase("not-mcl", "a torch file without the mcl checkpoint format", make_plain_torch,
                   ("not an mcl checkpoint",)),
    CheckpointCase("missing-tensor", "right format and config, one weight tensor missing", make_missing_tensor,
                   ("weights do not fit the model: missing ",)),
    CheckpointCase("missing", "`best.pt` does not exist", lambda best, marker: best.unlink(),
                   ("checkpoint not found",)),
]
CKPT_BY_ID = {c.id: c for c in CHECKPOINT_CASES}
assert len(CKPT_BY_ID) == len(CHECKPOINT_CASES)
CKPT_FILE = "models/share/seed0/best.pt"


CKPT_RUNS = [(c.id, "evaluate") for c in CHECKPOINT_CASES]
SUBPROCESS_CKPT_RUNS = [(cid, "evaluate") for cid in ("truncated", "crafted-torch", "crafted-pickle", "other-config")]


def marker_of(outcome: Outcome) -> Path:
    return outcome.cwd.parent / "pwned"  # outside the working directory


@pytest.fixture(scope="module")
def checkpoint_runs(tmp_path_factory, tiny_trained_run, write_tiny_params, run_mcl) -> Runs:
    def prepare(key: Key, folder: Path) -> Path:
        case, cwd = CKPT_BY_ID[key[0]], folder / "work"
        cwd.mkdir(parents=True)
        write_tiny_params(cwd / "params.yaml", case.params)
        shutil.copytree(tiny_trained_run, cwd / "models" / "share/seed0")
        case.make(cwd / CKPT_FILE, folder / "pwned")
        return cwd

    return execute(tmp_path_factory.mktemp("reliability_checkpoints"), CKPT_RUNS, SUBPROCESS_CKPT_RUNS, prepare,
                   lambda key: EVALUATE, run_mcl)


def check_checkpoint_refusal(outcome: Outcome, case: CheckpointCase, what: str) -> None:
    assert_refused(outcome, (CKPT_FILE, *case.needles), what)
    for word in case.absent:
        assert word not in outcome.message, (word, outcome.message)


@pytest.mark.parametrize("key", CKPT_RUNS, ids=lambda key: key[0])
def test_bad_checkpoint_refused(checkpoint_runs, key):
    """`mcl evaluate`: exit code 2, one line naming the checkpoint and the problem, nothing written."""
    check_checkpoint_refusal(checkpoint_runs.in_process[key], CKPT_BY_ID[key[0]], key[0])


@pytest.mark.parametrize("key", SUBPROCESS_CKPT_RUNS, ids=lambda key: key[0])
def test_bad_checkpoint_refused_subprocess(checkpoint_runs, key):
    check_checkpoint_refusal(checkpoint_runs.subprocess[key], CKPT_BY_ID[key[0]], key[0] + " (subprocess)")
    assert_same_as_in_process(checkpoint_runs, key)


CRAFTED = [c for c in CHECKPOINT_CASES if c.crafted]


@pytest.mark.parametrize("case", CRAFTED, ids=lambda c: c.id)
def test_crafted_checkpoint_runs_no_code(checkpoint_runs, case):
    """Refused (exit 2, the file named with the reason) and its payload never ran, in-process or in a real process."""
    runs = [checkpoint_runs.in_process[case.id, "evaluate"]]
    if (case.id, "evaluate") in checkpoint_runs.subprocess:
        runs.append(checkpoint_runs.subprocess[case.id, "evaluate"])
    for outcome in runs:
        assert outcome.code == 2 and CKPT_FILE in outcome.message, outcome.stderr
        assert all(word in outcome.message for word in case.needles), outcome.message
        assert not marker_of(outcome).exists(), f"loading {outcome.cwd / CKPT_FILE} ran its payload"
    assert len(runs) == 2, "no real-process run for this crafted case"


@pytest.mark.parametrize("case", CRAFTED, ids=lambda c: c.id)
def test_crafted_payload_is_live(case, tiny_trained_run, tmp_path):
    """Control for the marker check above: an unsafe load of the same file does run the payload."""
    import torch

    best = tmp_path / "best.pt"
    shutil.copy2(tiny_trained_run / "best.pt", best)
    marker = tmp_path / "pwned"
    case.make(best, marker)
    with contextlib.suppress(Exception):  # the bare pickle is no torch file: torch fails after unpickling it
        torch.load(best, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------------------
# docs/reliability.md


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


HEADER = ["bad input", "command", "exit code", "message"]
TABLE_HEAD = [_row(HEADER), _row(["---"] * len(HEADER))]
EVERY_STAGE = "every stage"


def message_cell(outcome: Outcome, roots: list[Path]) -> str:
    cell = code(normalise(outcome.message, roots))
    if outcome.other_lines:
        cell += f" (and {outcome.other_lines} more stderr lines, e.g. a warning)"
    return cell


def params_rows(runs: Runs) -> list[str]:
    rows = []
    for case in PARAMS_CASES:
        groups: dict[tuple[int, str], list[str]] = {}
        for stage in STAGES:
            o = runs.in_process[case.id, stage]
            groups.setdefault((o.code, message_cell(o, runs.roots)), []).append(stage)
        for (exit_code, message), stages in groups.items():
            command = EVERY_STAGE if len(stages) == len(STAGES) else ", ".join(
                code("mcl " + " ".join(STAGES[s])) for s in stages)
            rows.append(_row([case.input, command, str(exit_code), message]))
    return rows


def run_rows(keys: list[Key], runs: Runs, input_of: Callable[[str], str], args_of: Callable[[Key], list[str]]):
    return [_row([input_of(key[0]), code("mcl " + " ".join(args_of(key))), str(runs.in_process[key].code),
                  message_cell(runs.in_process[key], runs.roots)]) for key in keys]


def render_doc(params: Runs, stores: Runs, checkpoints: Runs) -> str:
    stages = ", ".join(code("mcl " + " ".join(args)) for args in STAGES.values())
    n_sub = len(SUBPROCESS_PARAMS_RUNS) + len(SUBPROCESS_STORE_RUNS) + len(SUBPROCESS_CKPT_RUNS)
    lines = [
        "# Bad inputs and the messages they get",
        "",
        f"> Generated by `{DOC_COMMAND}` from the cases in `tests/test_reliability.py`. Do not edit by hand:",
        "> `uv run pytest tests/test_reliability.py` fails when this file no longer matches what the commands print.",
        "",
        "Every stage subcommand validates the whole `params.yaml` before any other work, and episode stores and",
        "checkpoints are checked when they are read. A bad input ends the command with exit code 2 and one line on",
        "stderr, `Error: <message>`; the tables show that message. For every row the tests also check that",
        "nothing was printed on stdout and nothing was written: the working directory, which holds only the bad",
        "input (and what the command needs besides it), lists the same files afterwards. Temporary paths are shown",
        "as `<tmp>` and SHA-256 prefixes as `<sha256>`.",
        "",
        "The tests run each row in-process through click's test runner (the same command objects and error",
        f"handling; warnings count as stderr lines), and {n_sub} of the runs again as real `python -m mcl.cli`",
        "processes, which must give the same exit code and message.",
        "",
        "## Params",
        "",
        f"Each case is a valid tiny `params.yaml` with one thing broken, in an otherwise empty directory, run against "
        f"{EVERY_STAGE} that reads it: {stages}. As real processes, every case runs against `mcl train` and "
        f"{len(SUBPROCESS_EVERY_STAGE)} cases against every stage. (`mcl data card` validates params only with "
        "`--params`, as the dataset_card stage passes it; run by hand it needs just a store.)",
        "",
        *TABLE_HEAD,
        *params_rows(params),
        "",
        "## Stores",
        "",
        "Each case corrupts a copy of a tiny generated store (Zarr v3, or the same content in HDF5). "
        "`mcl data info` and `mcl data card` read every split and verify its checksum; `mcl evaluate` (with a "
        "valid `params.yaml` whose `data.store` names the bad store, and a trained run) reads `val` and `test`.",
        "",
        *TABLE_HEAD,
        *run_rows(STORE_RUNS, stores, lambda cid: STORE_BY_ID[cid].input,
                  lambda key: store_args(STORE_BY_ID[key[0]], key[1])),
        "",
        "## Checkpoints",
        "",
        f"Each case replaces `{CKPT_FILE}` in a copy of a tiny trained run, then runs `mcl evaluate` with a valid "
        "`params.yaml`. Checkpoints are read with `torch.load(weights_only=True)`: for the crafted files the tests "
        "also check that the payload did not run (its marker file does not exist), and that the same file does run "
        "it under an unsafe load.",
        "",
        *TABLE_HEAD,
        *run_rows(CKPT_RUNS, checkpoints, lambda cid: CKPT_BY_ID[cid].input, lambda key: EVALUATE),
        "",
    ]
    return "\n".join(lines)


def test_reliability_doc(params_runs, store_runs, checkpoint_runs, update_docs):
    text = render_doc(params_runs, store_runs, checkpoint_runs)
    if update_docs:
        DOC.write_text(text)
        return
    old = DOC.read_text() if DOC.exists() else ""
    if old != text:
        diff = "".join(list(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                 str(DOC.relative_to(REPO)), "generated"))[:60])
        pytest.fail(f"{DOC.relative_to(REPO)} is stale; regenerate it with `{DOC_COMMAND}`.\n{diff}")
