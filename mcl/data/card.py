"""The dataset card (``docs/dataset.md``) and the numbers behind ``mcl data info``, computed from a store."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from mcl.data.generator import Episodes, label_set_name, mask_name
from mcl.data.primitives import PRIMITIVES, apply_primitive
from mcl.data.store import EpisodeStore
from mcl.io import write_text


# the label-set pools of the store attribute ``label_sets``: what each is and which splits use it
POOLS = {
    "train": "lengths 1-2: `train`, `val` (the sets present in train), half the `probe` programs, the online source",
    "novel2": "length 2, held out of `train` and `val`: `novel2`",
    "dev": "length 3: `dev` (choosing hyperparameters)",
    "test": "length 3: `test`, `fewshot` (the sets present in test), half the `probe` programs",
}


def split_stats(episodes: Episodes, primitives: list[str]) -> dict:
    """Counts per split: episodes, program lengths, label sets, primitive frequencies."""
    lengths = (episodes.program >= 0).sum(axis=1)
    sets = Counter(label_set_name(row, primitives) for row in episodes.labels)
    return {
        "episodes": len(episodes),
        "lengths": {int(k): int(v) for k, v in zip(*np.unique(lengths, return_counts=True))},
        "label_sets": dict(sorted(sets.items(), key=lambda kv: (-kv[1], kv[0]))),
        "primitive_counts": {p: int(c) for p, c in zip(primitives, episodes.labels.sum(axis=0))},
        "foreground_fraction": float((episodes.inputs != 0).mean()),
    }


def store_summary(store: EpisodeStore) -> dict:
    """Per-split statistics of a store; loading each split verifies its checksum."""
    return {name: split_stats(store.load(name), store.primitives) for name in store.splits}


def format_info(store: EpisodeStore, top: int = 12) -> str:
    """Text for ``mcl data info``: splits, counts, label-set histogram, checksums."""
    a = store.attrs
    stats = store_summary(store)
    lines = [f"store: {store.path} ({store.format}, schema_version {a['schema_version']})",
             f"primitives: {', '.join(a['primitives'])}",
             f"episode: {a['episode_pairs']} pairs of {a['grid_size']}x{a['grid_size']} grids "
             f"({a['episode_pairs'] - 1} demonstrations + 1 query), colours 0-{a['colours'] - 1}",
             "data params: " + ", ".join(f"{k}={v}" for k, v in a["data"].items())]
    pools = a.get("label_sets") or {}
    if pools:
        lines.append("label sets drawn from: " + ", ".join(f"{k} {len(v)}" for k, v in pools.items())
                     + " (fixed by the generator params, not data.seed)")
        for name in ("novel2", "dev"):
            if pools.get(name):
                lines.append(f"  {name}: " + ", ".join(mask_name(m, a["primitives"]) for m in pools[name]))
    lines.append("")
    lines.append(f"{'split':<8} {'episodes':>8} {'label sets':>10}  {'lengths':<22} checksum (sha256, verified)")
    for name, s in stats.items():
        lens = " ".join(f"{k}:{v}" for k, v in s["lengths"].items())
        lines.append(f"{name:<8} {s['episodes']:>8} {len(s['label_sets']):>10}  {lens:<22} {a['checksums'][name]}")
    for name, s in stats.items():
        lines.append("")
        lines.append(f"{name}: label-set histogram (top {min(top, len(s['label_sets']))} of {len(s['label_sets'])})")
        for label, count in list(s["label_sets"].items())[:top]:
            lines.append(f"  {label:<28} {count:>6}")
    return "\n".join(lines)


SNIPPET = '''\
import json
from pathlib import Path

import numpy as np

if Path("data/episodes.zarr").exists():
    import zarr

    root = zarr.open_group("data/episodes.zarr", mode="r")
    primitives = root.attrs["primitives"]            # label order
    label_sets = root.attrs["label_sets"]            # bitmasks each split draws from (bit p = primitive p)
    test = root["test"]
    inputs = test["inputs"][:]                        # uint8 [N, S, 8, 8]; the last pair is the query
    outputs = test["outputs"][:]
    labels = test["labels"][:]                        # uint8 [N, P] multi-hot
else:  # the HDF5 variant (data.format: hdf5)
    import h5py

    with h5py.File("data/episodes.h5", "r") as f:
        if "primitives" in f.attrs:  # each attribute under its own name: strings, numbers, string arrays ...
            primitives = [str(p) for p in f.attrs["primitives"]]
            label_sets = json.loads(f.attrs["label_sets"])   # ... and nested ones as JSON strings
        else:  # every store also has them all as one JSON string (older stores have only this)
            attrs = json.loads(f.attrs["mcl"])
            primitives, label_sets = attrs["primitives"], attrs["label_sets"]
        inputs = f["test/inputs"][:]
        outputs = f["test/outputs"][:]
        labels = f["test/labels"][:]
print(inputs.shape, [p for p, bit in zip(primitives, labels[0]) if bit])
'''

_EXAMPLE_ARGS = dict(rotate=(1, -1), flip=(1, -1), recolor=(2, 4), swap=(2, 3), translate=(1, 2), gravity=(0, -1),
                     border=(5, -1), fill_bg=(8, -1))


def example_grid() -> np.ndarray:
    g = np.zeros((8, 8), np.uint8)
    g[1:3, 1:4] = 2
    g[4:7, 5] = 3
    g[5, 2] = 1
    g[6, 1:3] = 2
    return g


def primitive_figure(name: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    from mcl.plots import draw_grid, save_figure

    a, b = _EXAMPLE_ARGS[name]
    g = example_grid()
    out = apply_primitive(name, g[None], a, b)[0]
    fig, axes = plt.subplots(1, 2, figsize=(3.2, 1.7))
    draw_grid(axes[0], g, "input")
    draw_grid(axes[1], out, f"{name}({a}, {b})")
    save_figure(fig, path)


def _holdout_section(a: dict) -> str:
    """Markdown: the store's label-set pools, the novel2 / dev rule and the held-out sets.

    Older stores (pools train and test only, no ``holdout`` attribute) get the pools they have.
    """
    pools = a.get("label_sets") or {}
    if not pools:
        return ""
    prims = a["primitives"]
    hold = a.get("holdout") or {}
    text = ["", "### Label sets",
            "Each split draws its label sets from one pool (store attribute `label_sets`); the pools are fixed by",
            "the generator params and do not depend on `data.seed`.", "",
            "| pool | label sets | used by |", "|---|---|---|",
            *(f"| `{name}` | {len(sets)} | {POOLS.get(name, '')} |" for name, sets in pools.items()), ""]
    if "novel2" in pools:
        n2 = pools["novel2"]
        f2 = len(n2) + sum(1 for m in pools.get("train", []) if bin(m).count("1") == 2)
        fraction = a["data"].get("novel2_fraction", hold.get("novel2_fraction"))
        held = ", ".join(f"`{mask_name(m, prims)}`" for m in n2) or "none"
        per = ", ".join(f"{p} {sum(int(m) >> i & 1 for m in n2)}" for i, p in enumerate(prims))
        text += [f"`novel2` rule: of the {f2} feasible length-2 label sets, round(`data.novel2_fraction` x {f2}) = "
                 f"round({fraction} x {f2}) = {len(n2)}",
                 "(at least one when the fraction is > 0) are held out of `train`, `val` and the online source,",
                 f"chosen by a fixed rule (`mcl.data.generator.balanced_holdout`): {hold.get('restarts', 64)} random "
                 "orders of the candidates,",
                 f"drawn from the fixed seed {hold.get('seed', '(not recorded)')}, are each filled greedily with the "
                 "next label set whose",
                 "primitives occur least so far, and the selection with the smallest spread of per-primitive counts",
                 "wins. `data.seed` plays no part; `data.novel2_fraction: 0` holds out nothing and writes no `novel2`",
                 f"split. Held out: {held}; pairs per primitive: {per}.", ""]
    if "dev" in pools:
        dev, f3 = pools["dev"], len(pools["dev"]) + len(pools.get("test", []))
        text += [f"`dev` rule: the same rule takes round({hold.get('dev_fraction', '?')} x {f3}) = {len(dev)} of the "
                 f"{f3} feasible length-3 label sets",
                 "for `dev`; `test` gets the rest and `fewshot` uses test's, so choosing `loss.beta` or step counts on",
                 "`dev` never looks at a test or fewshot label set. Dev: "
                 + ", ".join(f"`{mask_name(m, prims)}`" for m in dev) + ".", ""]
    return "\n".join(text)


def _why_section(a: dict, stats: dict) -> str:
    """Markdown: what `data.demos`, grid density and the split sizes trade off, with this store's values."""
    d = a["data"]
    demos = d.get("demos", a["episode_pairs"] - 1)
    per = {name: s["episodes"] / max(1, len(s["label_sets"])) for name, s in stats.items() if name != "probe"}
    fg = stats["train"]["foreground_fraction"] if "train" in stats else float("nan")
    sizes = ", ".join(f"`{name}` {stats[name]['episodes']} (~{per[name]:.0f} per label set)" for name in per)
    return f"""
## Why these values
- `data.demos` = {demos}: an episode shows {demos} demonstrations of one program with one parameter set,
  and every rule above must hold in all {demos + 1} pairs, so each extra pair pins the program and its
  colour parameters down further (fewer coincidental explanations of the demonstrations) while a
  longer encoder input and more rejected candidate episodes are its cost.
- Grid density: {d['min_shapes']}-{d['max_shapes']} shapes of side <= {d['max_shape_size']} (sprite probability
  {d['sprite_prob']}) in {d['palette']} colours shared by the episode give a foreground fraction of {fg:.3f} in
  `train`: background left for `gravity`, `translate`, `border` and `fill_bg` to act on, and few enough
  colours that the ones `recolor` and `swap` refer to occur in every grid of the episode. Sparse grids
  also keep exact match (every one of the 64 cells right) within reach of a CPU training budget: the
  `dense_grids` row of `docs/learnability.md` trains the same recipe on denser grids for comparison.
- Split sizes: {sizes}. `train` repeats every train label set many times, as the grouped sampler
  needs (each batch takes `train.group_size` episodes of each of `train.groups` label sets); the
  evaluation splits are sized by episodes per label set, the unit their per-label-set and
  per-primitive scores average over, and `fewshot` needs `finetune.shots` + `finetune.queries`
  episodes of a label set per task.
"""


def _primitive_rows(figures: Path, rel: str) -> list[str]:
    """Draw each primitive's example figure into ``figures``; its table row, linking the figure as ``rel``/...."""
    rows = []
    for p in PRIMITIVES:
        primitive_figure(p.name, figures / f"primitive_{p.name}.png")
        rows.append(f"| `{p.name}` | {p.meaning} | {len(p.param_table)} | ![{p.name}]({rel}/primitive_{p.name}.png) |")
    return rows


def write_card(store: EpisodeStore, out: str | os.PathLike, figures: str | os.PathLike) -> None:
    """Write the dataset card markdown to ``out`` and its PNGs into ``figures``."""
    out, figures = Path(out), Path(figures)
    a = store.attrs
    stats = store_summary(store)
    rows = _primitive_rows(figures, os.path.relpath(figures, out.parent))
    split_rows = []
    for name, s in stats.items():
        lens = ", ".join(f"{v} of length {k}" for k, v in s["lengths"].items())
        split_rows.append(f"| `{name}` | {s['episodes']} | {len(s['label_sets'])} | {lens} | "
                          f"{s['foreground_fraction']:.3f} | `{a['checksums'][name][:16]}` |")
    prim_rows = [f"| `{name}` | " + " | ".join(str(stats[name]["primitive_counts"][p]) for p in a["primitives"]) + " |"
                 for name in stats]
    holdout_text = _holdout_section(a)
    why_text = _why_section(a, stats)
    text = f"""# Dataset card: mcl episodes

Generated by `uv run mcl data card {store.path}` (DVC stage `dataset_card`) from the store that
`uv run dvc repro generate` writes; every number below is read from that store.

## What an episode is
An episode is {a['episode_pairs']} input/output pairs of {a['grid_size']}x{a['grid_size']} `uint8` grids
(colours 0-9, 0 is background) produced by one program with one set of parameters: the first
{a['episode_pairs'] - 1} pairs are demonstrations, the last is the query. A program is 1-3 steps of
distinct primitive types applied in order (step 0 first); its label is the multi-hot over primitive
types, in the order of the `primitives` attribute. Input grids hold {a['data']['min_shapes']}-{a['data']['max_shapes']}
rectangles or sprites (side <= {a['data']['max_shape_size']}) drawn from a palette of {a['data']['palette']} colours shared by the episode.

## Primitives
Parameters are two integers `(a, b)` stored in `args`, `-1` where unused.

| name | meaning of (a, b) | parameter choices | example |
|---|---|---|---|
""" + "\n".join(rows) + f"""

## Rules the generator enforces
- No pair is a no-op (output != input), and no step leaves any of its grids unchanged.
- Labels are identifiable: a program is never functionally equal to a shorter program, nor (length
  <= 2) to a program of the same length with another label set, checked against a signature table of
  every program of length <= 2 with every parameter choice, on fixed probe grids. Label sets with no
  identifiable program (e.g. `rotate`+`flip`: a rotation then a flip is a single flip) are dropped.
- Colours a step refers to (recolor source, both swap colours) occur in every grid that step
  receives, in every pair of the episode.
- `train`/`val` hold lengths 1-2, `novel2` length 2, `dev`/`test`/`fewshot` length 3 only, so no
  length-3 label set occurs in train; `novel2` label sets occur in neither `train` nor `val`, and `dev`
  label sets in neither `test` nor `fewshot` (see below).
- No episode is in two splits: `val` episodes are not `train` episodes, `fewshot` episodes are not
  `test` episodes, `dev` and `novel2` episodes are in no other split.
- `probe`: {a['probe']['programs']} programs (half with train label sets, half with test label sets) x
  {a['probe']['episodes_per_program']} episodes; row `i * {a['probe']['episodes_per_program']} + j` is episode j of
  program i, and episode j of every program has the same input grids.

## Splits
| split | episodes | label sets | program lengths | foreground fraction | sha256 (prefix) |
|---|---|---|---|---|---|
""" + "\n".join(split_rows) + """

Episodes per primitive (an episode counts once for each primitive in its label):

| split | """ + " | ".join(f"`{p}`" for p in a["primitives"]) + " |\n|---|" + "---|" * len(a["primitives"]) + "\n" + "\n".join(prim_rows) + f"""

{holdout_text}
{why_text}
## Schema
One group per split; every array is stored as a single chunk (a few dozen files in all, which keeps
`dvc push`/`pull` fast).

| array | dtype | shape | content |
|---|---|---|---|
| `inputs` | uint8 | [N, S, 8, 8] | input grids, S = demos + 1, the last is the query |
| `outputs` | uint8 | [N, S, 8, 8] | output grids |
| `labels` | uint8 | [N, P] | multi-hot primitive label, P = {len(a['primitives'])} |
| `program` | int16 | [N, 3] | primitive index per step, -1 padding |
| `args` | int16 | [N, 3, 2] | parameters (a, b) per step, -1 where unused |

Root attributes: `schema_version` ({a['schema_version']}), `primitives`, `parameters`, `grid_size`, `colours`,
`episode_pairs`, `data` (the `data` params used), `splits` (counts), `label_sets` (the bitmasks each
pool above holds, bit p = primitive p), `holdout` (the hold-out rule's seed and fractions), `probe`,
and `checksums`: SHA-256 per split over `name:dtype:shape` and the C-order bytes of each array in
the order above. `mcl` verifies them on every read. Zarr keeps them as group attributes. HDF5 keeps
each under its own name at the root (numbers and strings natively, `primitives` as a string array,
the nested ones as JSON strings), so `h5dump -A` and plain h5py show them, and all of them once more
as one JSON string in the root attribute `mcl`, the only form in stores written before the named
attributes; mcl reads `mcl` and checks the named attributes agree with it.

## Reading a split without mcl
```python
{SNIPPET}```
"""
    write_text(out, text)
