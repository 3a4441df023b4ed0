"""Episode generator: structured input grids, programs, the generator rules, and the seven splits.

A program is 1-3 steps of distinct primitive types applied in order; its label is the
multi-hot over primitive types. An episode is ``demos + 1`` input/output pairs of one
program with one set of parameters (the last pair is the query).

Rules enforced for every episode (each has a test):

* no pair is a no-op (output != input), and no step leaves any of its grids unchanged;
* labels are identifiable: a program is never functionally equal to a shorter program,
  nor (length <= 2) to a program of the same length with another label set. Checked with a
  signature table of every program of length <= 2 (every parameter choice) on fixed probe
  grids (:class:`SignatureTable`);
* colours a step's parameters refer to (recolor source, both swap colours) occur in every
  grid that step receives, in every pair of the episode.

Splits and the label sets they draw from (:func:`label_set_partition`):

* ``train`` (lengths 1-2): every feasible length-1/2 label set except the ``novel2`` hold-out;
  ``val``: the label sets present in train, episodes that are not train episodes;
* ``novel2`` (length 2): ``round(data.novel2_fraction * F2)`` of the F2 feasible length-2 label
  sets, held out of train and val, chosen by :func:`balanced_holdout` (fixed seed
  :data:`HOLDOUT_SEED`, balanced over primitives). ``data.novel2_fraction: 0`` holds out nothing
  and writes no novel2 split;
* ``dev`` and ``test`` (length 3) split the feasible length-3 label sets: ``dev`` gets
  ``round(DEV_FRACTION * F3)`` of them by the same rule, ``test`` the rest, so selecting
  hyperparameters on dev never looks at a test label set; ``fewshot``: the label sets present
  in test (hence none of dev's), episodes that are not test episodes;
* dev and novel2 episodes repeat no episode of train, val, test or fewshot (novel2 none of dev's);
* ``probe``: half its programs have train label sets, half test label sets.

Which label sets are feasible and which are held out depends on the generator params (demos,
shapes, palette, novel2_fraction), never on ``data.seed``. Everything is vectorised over
episodes; randomness comes from ``numpy.random.Generator`` streams seeded by
``(data.seed, split)``, so the same params give the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from mcl.config import ConfigError, DataConfig
from mcl.data.primitives import (COLOURS, MAX_PARAMS, NUM_PRIMITIVES, PARAM_INDEX, PRIMITIVES, SIZE,
                                 apply_steps, run_programs)

MAX_STEPS = 3
ALL_SPLITS = ("train", "val", "dev", "test", "fewshot", "novel2", "probe")
SPLIT_LENGTHS = {"train": (1, 2), "val": (1, 2), "novel2": (2,), "dev": (3,), "test": (3,), "fewshot": (3,)}
# random stream per split, fixed numbers: adding a split never moves another split's stream
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2, "fewshot": 3, "probe": 4, "dev": 5, "novel2": 6}
TABLE_SEED = 20240611  # fixed: the probe grids are part of the generator's definition
PILOT_SEED = 7  # fixed: which label sets are feasible does not depend on data.seed
HOLDOUT_SEED = 20240612  # fixed: which label sets novel2 and dev hold out does not depend on data.seed
DEV_FRACTION = 0.25  # share of the feasible length-3 label sets that go to dev (the rest to test)
HOLDOUT_RESTARTS = 64  # random orders the hold-out rule tries (see balanced_holdout)


@dataclass
class Episodes:
    """A batch of episodes: the arrays stored per split.

    inputs, outputs: uint8 [N, S, 8, 8]; labels: uint8 [N, P] multi-hot;
    program: int16 [N, 3] primitive index per step (-1 padding); args: int16 [N, 3, 2].
    """

    inputs: np.ndarray
    outputs: np.ndarray
    labels: np.ndarray
    program: np.ndarray
    args: np.ndarray

    FIELDS = ("inputs", "outputs", "labels", "program", "args")

    def __len__(self):
        return len(self.inputs)

    def take(self, rows) -> "Episodes":
        return Episodes(*(getattr(self, f)[rows] for f in self.FIELDS))

    @staticmethod
    def concat(parts: list["Episodes"]) -> "Episodes":
        return Episodes(*(np.concatenate([getattr(p, f) for p in parts]) for f in Episodes.FIELDS))


# ---------------------------------------------------------------------------
# input grids

# ROW_EXPAND[v]: the 64-bit cell mask (bit 8 * row + col) of the rows set in byte v
_ROW_EXPAND = np.array([sum(0xFF << (8 * r) for r in range(SIZE) if v >> r & 1) for v in range(256)], np.uint64)
_EVERY_ROW = np.uint64(0x0101010101010101)


def random_grids(rng: np.random.Generator, palettes: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Structured grids: a few rectangles or sprites painted on background, later shapes on top.

    palettes: uint8 [N, C] colours (1..9) each grid draws its shapes from. Shape 0 always has
    colour ``palettes[:, 0]`` and is drawn on top of the others, so grids sharing a palette
    share a visible colour; the other shapes are drawn in order, later over earlier. A sprite
    is a rectangle with about a quarter of its cells left out at random (never all of them).
    Returns uint8 [N, 8, 8].
    Shapes are built as 64-bit cell masks (bit 8 * row + col), so the work per grid is a
    few integer operations per shape.
    """
    n = len(palettes)
    count = rng.integers(cfg.min_shapes, cfg.max_shapes + 1, n)
    masks = []
    for s in range(cfg.max_shapes):
        h = rng.integers(1, cfg.max_shape_size + 1, n)
        w = rng.integers(1, cfg.max_shape_size + 1, n)
        top = rng.integers(0, SIZE - h + 1)
        left = rng.integers(0, SIZE - w + 1)
        rows = _ROW_EXPAND[((1 << h) - 1) << top]
        cols = (((1 << w) - 1) << left).astype(np.uint64) * _EVERY_ROW
        noise = np.frombuffer(rng.bytes(16 * n), np.uint64).reshape(2, n)
        sprite = rng.random(n) < cfg.sprite_prob
        rect = rows & cols
        sprite_cells = rect & (noise[0] | noise[1])
        shape = np.where(sprite & (sprite_cells != 0), sprite_cells, rect)  # a sprite never loses every cell
        masks.append(np.where(s < count, shape, np.uint64(0)))
    colours = palettes[np.arange(n)[:, None], rng.integers(0, palettes.shape[1], (n, cfg.max_shapes))]
    colours[:, 0] = palettes[:, 0]  # shape 0 has the palette's first colour, shared by the episode
    grids = np.zeros((n, SIZE * SIZE), np.uint8)
    covered = np.zeros(n, np.uint64)
    for s in [0] + list(reversed(range(1, cfg.max_shapes))):  # top first: shape 0, then later over earlier
        visible = masks[s] & ~covered
        covered |= masks[s]
        cells = np.unpackbits(visible.astype("<u8").view(np.uint8).reshape(n, 8), axis=1, bitorder="little")
        grids += cells * colours[:, s, None]
    return grids.reshape(n, SIZE, SIZE)


def episode_inputs(rng: np.random.Generator, n: int, cfg: DataConfig) -> np.ndarray:
    """Input grids uint8 [n, S, 8, 8]; the S grids of an episode share a palette of cfg.palette colours."""
    s = cfg.demos + 1
    palettes = (np.argsort(rng.random((n, 9)), axis=1)[:, :cfg.palette] + 1).astype(np.uint8)
    grids = random_grids(rng, np.repeat(palettes, s, axis=0), cfg)
    return grids.reshape(n, s, SIZE, SIZE)


# ---------------------------------------------------------------------------
# the signature table: identifiability of labels

def probe_grids() -> np.ndarray:
    """Fixed grids [8, 8, 8] on which program signatures are computed: every colour, lots of background."""
    rng = np.random.default_rng(TABLE_SEED)
    while True:
        g = rng.integers(1, COLOURS, (8, SIZE, SIZE)).astype(np.uint8)
        g[rng.random(g.shape) < 0.4] = 0
        if all(np.isin(np.arange(COLOURS), x).all() for x in g):
            return g


_HASH_WEIGHTS = np.random.default_rng(TABLE_SEED + 1).integers(1, 2**63, 8 * SIZE * SIZE, dtype=np.uint64) | np.uint64(1)


def signatures(program: np.ndarray, args: np.ndarray) -> np.ndarray:
    """64-bit signature per program: a hash of its outputs on :func:`probe_grids`. [M] uint64."""
    probes = probe_grids()
    m, k = len(program), len(probes)
    grids = np.tile(probes, (m, 1, 1))
    out = run_programs(grids, np.repeat(program, k, axis=0), np.repeat(args, k, axis=0))
    flat = out.reshape(m, k * SIZE * SIZE).astype(np.uint64) + np.uint64(1)
    return (flat * _HASH_WEIGHTS).sum(axis=1, dtype=np.uint64)


def label_masks(program: np.ndarray) -> np.ndarray:
    """Label set of each program as a bitmask int64 [M] (bit p set when primitive p occurs)."""
    bits = np.where(program >= 0, np.left_shift(1, np.maximum(program, 0)), 0)
    return np.bitwise_or.reduce(bits, axis=1).astype(np.int64)


def _param_key(program: np.ndarray, args: np.ndarray) -> np.ndarray:
    """Dense index of a program's steps: (p * MAX_PARAMS + param row) per step, NONE for padding."""
    p = np.maximum(program, 0).astype(np.int64)
    row = PARAM_INDEX[p, args[..., 0].astype(np.int64) + 2, args[..., 1].astype(np.int64) + 2]
    return np.where(program >= 0, p * MAX_PARAMS + row, NUM_PRIMITIVES * MAX_PARAMS)


def all_programs(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every program of exactly ``length`` steps with every parameter choice: (program [M, 3], args [M, 3, 2])."""
    progs, argss = [], []
    for types in itertools.permutations(range(NUM_PRIMITIVES), length):
        tables = [PRIMITIVES[t].param_table for t in types]
        for choice in itertools.product(*(range(len(t)) for t in tables)):
            prog = list(types) + [-1] * (MAX_STEPS - length)
            arg = [tables[i][c].tolist() for i, c in enumerate(choice)] + [[-1, -1]] * (MAX_STEPS - length)
            progs.append(prog)
            argss.append(arg)
    if not progs:  # length 0: the identity
        return np.full((1, MAX_STEPS), -1, np.int16), np.full((1, MAX_STEPS, 2), -1, np.int16)
    return np.array(progs, np.int16), np.array(argss, np.int16)


class SignatureTable:
    """Signatures of every program of length 0-2 on the probe grids, and the identifiability verdict.

    A program of length L with label set m is *identifiable* unless some program of
    length < L has the same signature, or (L <= 2) a program of length L with another
    label set does. Length <= 2 verdicts are precomputed per parameter choice; length 3
    programs are hashed on demand.
    """

    def __init__(self):
        sigs, lens, masks, keys = [], [], [], []
        for length in (0, 1, 2):
            prog, args = all_programs(length)
            sigs.append(signatures(prog, args))
            lens.append(np.full(len(prog), length))
            masks.append(label_masks(prog))
            keys.append(_param_key(prog, args))
        sig, length, mask, key = (np.concatenate(x) for x in (sigs, lens, masks, keys))
        order = np.lexsort((length, sig))
        sig, length, mask, key = sig[order], length[order], mask[order], key[order]
        self.sigs, first = np.unique(sig, return_index=True)
        group = np.searchsorted(self.sigs, sig)
        self.min_len = length[first]  # per signature: shortest program with it
        # per signature: label mask of its shortest programs if they all agree, else -1
        shortest = length == self.min_len[group]
        lo = np.full(len(self.sigs), np.iinfo(np.int64).max)
        hi = np.full(len(self.sigs), -1)
        np.minimum.at(lo, group[shortest], mask[shortest])
        np.maximum.at(hi, group[shortest], mask[shortest])
        self.unique_mask = np.where(lo == hi, lo, -1)
        ok = (self.min_len[group] == length) & (self.unique_mask[group] == mask) & (length > 0)
        none = NUM_PRIMITIVES * MAX_PARAMS
        self.allowed_short = np.zeros((none + 1, none + 1), bool)
        self.allowed_short[key[:, 0], key[:, 1]] = ok
        self.count = len(sig)

    def identifiable(self, program: np.ndarray, args: np.ndarray) -> np.ndarray:
        """Bool [M]: which programs pass the identifiability rule."""
        length = (program >= 0).sum(axis=1)
        key = _param_key(program, args)
        verdict = self.allowed_short[key[:, 0], key[:, 1]] & (length <= 2)
        long = np.flatnonzero(length == 3)
        if len(long):
            # hash each distinct length-3 program once
            uniq, inverse = np.unique(key[long], axis=0, return_inverse=True)
            first = long[np.unique(inverse.ravel(), return_index=True)[1]]
            sig = signatures(program[first], args[first])
            hit = np.isin(sig, self.sigs)
            verdict[long] = ~hit[inverse.ravel()]
        return verdict


_TABLE: SignatureTable | None = None


def signature_table() -> SignatureTable:
    """The process-wide signature table (built once, about a second)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = SignatureTable()
    return _TABLE


# ---------------------------------------------------------------------------
# programs on episodes

def _present(grids: np.ndarray) -> np.ndarray:
    """Colours present in *every* grid of each episode: bool [N, 10] for grids [N, S, 8, 8]."""
    n, s = grids.shape[:2]
    bits = np.left_shift(np.uint16(1), grids.reshape(n, s, -1).astype(np.uint16))
    common = np.bitwise_and.reduce(np.bitwise_or.reduce(bits, axis=2), axis=1)  # [n] colour bitmask
    return (common[:, None] >> np.arange(COLOURS, dtype=np.uint16)) & 1 == 1


def _sample_args(rng: np.random.Generator, p: int, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parameters for primitive ``p`` on the episodes ``grids`` [n, S, 8, 8]: args int16 [n, 2], ok bool [n].

    Recolor and swap draw their source colours from the colours present in every grid.
    """
    n = len(grids)
    name = PRIMITIVES[p].name
    if name in ("recolor", "swap"):
        allowed = _present(grids)
        if name == "recolor":
            allowed[:, 0] = False  # recolouring background would be fill_bg
        score = np.where(allowed, rng.random((n, COLOURS)), -1.0)
        top2 = np.argsort(-score, axis=1)[:, :2]
        if name == "recolor":
            a = top2[:, 0]
            b = (a + rng.integers(1, COLOURS, n)) % COLOURS  # any colour but a
            ok = allowed.any(axis=1)
        else:
            a, b = top2.min(axis=1), top2.max(axis=1)
            ok = allowed.sum(axis=1) >= 2
        return np.stack([a, b], axis=1).astype(np.int16), ok
    table = PRIMITIVES[p].param_table
    return table[rng.integers(0, len(table), n)], np.ones(n, bool)


def apply_programs(rng: np.random.Generator, inputs: np.ndarray, program: np.ndarray,
                   table: SignatureTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw parameters for each episode's program, run it, and check every rule.

    inputs uint8 [N, S, 8, 8]; program int16 [N, 3]. Returns outputs uint8 [N, S, 8, 8],
    args int16 [N, 3, 2] and valid bool [N].
    """
    n, s = inputs.shape[:2]
    grids = inputs.copy()
    args = np.full((n, MAX_STEPS, 2), -1, np.int16)
    valid = np.ones(n, bool)
    for t in range(MAX_STEPS):
        if (program[:, t] < 0).all():
            break
        for p in range(NUM_PRIMITIVES):
            rows = np.flatnonzero(program[:, t] == p)
            if len(rows):
                args[rows, t], ok = _sample_args(rng, p, grids[rows])
                valid[rows] &= ok
        step = np.repeat(program[:, t], s)
        new = apply_steps(grids.reshape(n * s, SIZE, SIZE), step, np.repeat(args[:, t], s, axis=0)).reshape(grids.shape)
        unchanged = (new == grids).all(axis=(2, 3)).any(axis=1)  # some pair left unchanged by this step
        valid &= ~(unchanged & (program[:, t] >= 0))
        grids = new
    valid &= ~(grids == inputs).all(axis=(2, 3)).any(axis=1)  # no pair is a no-op overall
    valid[valid] &= table.identifiable(program[valid], args[valid])
    return grids, args, valid


def episode_hashes(inputs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """64-bit hash per episode of its input and output grids, for disjointness checks. [N] uint64."""
    n = len(inputs)
    words = np.concatenate([np.ascontiguousarray(inputs).reshape(n, -1).view(np.uint64),
                            np.ascontiguousarray(outputs).reshape(n, -1).view(np.uint64)], axis=1)
    weights = np.random.default_rng(TABLE_SEED + 2).integers(1, 2**63, words.shape[1], dtype=np.uint64) | np.uint64(1)
    mixed = (words ^ (words >> np.uint64(29))) * weights  # mix each word before the weighted sum
    return mixed.sum(axis=1, dtype=np.uint64)


def _orders(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """A random step order for each label set: program int16 [N, 3] (-1 padded)."""
    n = len(masks)
    member = (masks[:, None] >> np.arange(NUM_PRIMITIVES)) & 1 == 1
    score = np.where(member, rng.random((n, NUM_PRIMITIVES)), 2.0)
    order = np.argsort(score, axis=1)[:, :MAX_STEPS]
    length = member.sum(axis=1)
    return np.where(np.arange(MAX_STEPS) < length[:, None], order, -1).astype(np.int16)


def episodes_for_label_sets(rng: np.random.Generator, masks: np.ndarray, cfg: DataConfig,
                            table: SignatureTable, exclude: np.ndarray | None = None,
                            max_rounds: int = 200) -> Episodes:
    """One valid episode per entry of ``masks`` (label-set bitmasks), resampling failures.

    Each round redraws order, inputs and parameters for the episodes still invalid.
    ``exclude``: episode hashes that must not be produced (disjointness between splits).
    """
    n = len(masks)
    s = cfg.demos + 1
    out = Episodes(np.zeros((n, s, SIZE, SIZE), np.uint8), np.zeros((n, s, SIZE, SIZE), np.uint8),
                   ((masks[:, None] >> np.arange(NUM_PRIMITIVES)) & 1).astype(np.uint8),
                   np.full((n, MAX_STEPS), -1, np.int16), np.full((n, MAX_STEPS, 2), -1, np.int16))
    todo = np.arange(n)
    for _ in range(max_rounds):
        if not len(todo):
            return out
        program = _orders(rng, masks[todo])
        inputs = episode_inputs(rng, len(todo), cfg)
        outputs, args, valid = apply_programs(rng, inputs, program, table)
        if exclude is not None and len(exclude):
            valid &= ~np.isin(episode_hashes(inputs, outputs), exclude)
        done = todo[valid]
        out.inputs[done], out.outputs[done] = inputs[valid], outputs[valid]
        out.program[done], out.args[done] = program[valid], args[valid]
        todo = todo[~valid]
    stuck = sorted({int(m) for m in masks[todo]})
    raise RuntimeError(f"generator: no valid episode after {max_rounds} rounds for label sets {stuck}")


def feasible_label_sets(lengths: tuple[int, ...], cfg: DataConfig, table: SignatureTable,
                        trials: int = 128, min_rate: float = 0.05) -> np.ndarray:
    """Label-set bitmasks of the given lengths whose episodes pass the rules often enough.

    Some label sets admit no identifiable program (rotate + flip is always a single
    flip); a pilot of ``trials`` episodes per label set with a fixed seed keeps those
    whose acceptance rate is at least ``min_rate``. Sorted int64 array.
    """
    candidates = np.array([sum(1 << p for p in combo) for length in lengths
                           for combo in itertools.combinations(range(NUM_PRIMITIVES), length)], np.int64)
    rng = np.random.default_rng(PILOT_SEED)
    masks = np.repeat(candidates, trials)
    _, _, valid = apply_programs(rng, episode_inputs(rng, len(masks), cfg), _orders(rng, masks), table)
    rate = valid.reshape(len(candidates), trials).mean(axis=1)
    return np.sort(candidates[rate >= min_rate])


def primitive_counts(label_sets: np.ndarray) -> np.ndarray:
    """How many of the label sets (bitmasks) each primitive occurs in: int64 [P]."""
    sets = np.asarray(label_sets, np.int64)
    return ((sets[:, None] >> np.arange(NUM_PRIMITIVES)) & 1).sum(axis=0)


def holdout_count(fraction: float, available: int) -> int:
    """How many of ``available`` label sets a hold-out of ``fraction`` takes: round half up, at least one if > 0."""
    if fraction <= 0 or available == 0:
        return 0
    return max(1, int(np.floor(fraction * available + 0.5)))


def balanced_holdout(candidates: np.ndarray, k: int, restarts: int = HOLDOUT_RESTARTS) -> np.ndarray:
    """``k`` of the label sets ``candidates``, spread as evenly as possible over primitives.

    The fixed rule behind novel2 and dev: each of ``restarts`` random orders of the (sorted)
    candidates, drawn from :data:`HOLDOUT_SEED`, is filled greedily -- the next label set is the
    first in that order whose primitives occur least among those chosen so far (smallest
    largest count, then smallest total). The selection whose per-primitive counts have the
    smallest spread (max - min over the primitives the candidates contain, then sum of squares)
    wins; the earliest order wins ties. The result depends only on the candidate set and ``k``
    (not on ``data.seed``, nor on the order the candidates are given in). Sorted int64 array.
    """
    candidates = np.unique(np.asarray(candidates, np.int64))
    if not 0 <= k <= len(candidates):
        raise ValueError(f"balanced_holdout: cannot take {k} of {len(candidates)} label sets")
    member = (candidates[:, None] >> np.arange(NUM_PRIMITIVES)) & 1  # [C, P]
    present = member.any(axis=0)
    big = (NUM_PRIMITIVES + 1) * (len(candidates) + 1)
    rng = np.random.default_rng(HOLDOUT_SEED)
    best, best_score = None, None
    for _ in range(restarts):
        order = rng.permutation(len(candidates))
        m = member[order]
        counts = np.zeros(NUM_PRIMITIVES, np.int64)
        free = np.ones(len(candidates), bool)
        chosen = []
        for _ in range(k):
            largest = np.where(m == 1, counts, -1).max(axis=1)
            score = np.where(free, largest * big + m @ counts, np.iinfo(np.int64).max)
            i = int(np.argmin(score))  # first in order among the best
            free[i] = False
            counts += m[i]
            chosen.append(order[i])
        c = counts[present]
        spread = (int(c.max() - c.min()) if len(c) else 0, int((c ** 2).sum()))
        if best_score is None or spread < best_score:
            best, best_score = chosen, spread
    return np.sort(candidates[np.array(best, np.int64)]) if k else np.zeros(0, np.int64)


def label_set_name(labels_row, primitives) -> str:
    """``rotate+recolor`` for one episode's multi-hot labels [P]: its primitives in label order."""
    return "+".join(p for p, bit in zip(primitives, labels_row) if bit)


def mask_name(mask: int, primitives) -> str:
    """``rotate+recolor`` for a label-set bitmask (bit p = primitive p)."""
    return "+".join(p for i, p in enumerate(primitives) if int(mask) >> i & 1)


def label_set_partition(cfg: DataConfig, table: SignatureTable | None = None) -> dict[str, np.ndarray]:
    """The label sets (sorted int64 bitmasks) each split draws from: train, novel2, dev, test.

    train + novel2 = the feasible label sets of lengths 1-2, novel2 = ``holdout_count(
    cfg.novel2_fraction, F2)`` of the F2 feasible length-2 ones (:func:`balanced_holdout`);
    dev + test = the feasible length-3 label sets, dev = ``holdout_count(DEV_FRACTION, F3)`` of
    them. Fixed seeds throughout, so the partition depends on the generator params, never on
    ``cfg.seed``. Raises ConfigError when novel2 would take every length-2 label set.
    """
    table = table or signature_table()
    short = feasible_label_sets(SPLIT_LENGTHS["train"], cfg, table)
    long = feasible_label_sets((3,), cfg, table)
    pairs = short[[bin(int(m)).count("1") == 2 for m in short]]
    k = holdout_count(cfg.novel2_fraction, len(pairs))
    if len(pairs) and k >= len(pairs):
        raise ConfigError(f"data.novel2_fraction {cfg.novel2_fraction} would hold out all {len(pairs)} feasible "
                          f"length-2 label sets (train needs at least one)")
    novel2 = balanced_holdout(pairs, k)
    dev = balanced_holdout(long, holdout_count(DEV_FRACTION, len(long)) if len(long) > 1 else 0)
    return {"train": np.setdiff1d(short, novel2), "novel2": novel2, "dev": dev, "test": np.setdiff1d(long, dev)}


def _balanced(rng: np.random.Generator, label_sets: np.ndarray, n: int) -> np.ndarray:
    """n label sets cycling through ``label_sets`` (balanced), in random order."""
    return rng.permutation(np.resize(rng.permutation(label_sets), n))


def split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_STREAM[split]])


def generate_split(split: str, n: int, cfg: DataConfig, table: SignatureTable, label_sets: np.ndarray,
                   exclude: np.ndarray | None = None) -> Episodes:
    """``n`` episodes of ``split`` with label sets balanced over ``label_sets``."""
    rng = split_rng(cfg.seed, split)
    return episodes_for_label_sets(rng, _balanced(rng, label_sets, n), cfg, table, exclude)


def generate_probe(cfg: DataConfig, table: SignatureTable, train_sets: np.ndarray, test_sets: np.ndarray,
                   retries: int = 20, max_rounds: int = 500) -> Episodes:
    """The probe split: ``probe_programs`` programs x ``probe_episodes`` episodes on shared inputs.

    Half the programs have train label sets, half test label sets; each program has one
    fixed step order. Row ``i * probe_episodes + j`` is episode j of program i, and episode j
    of every program uses the same input grids. Parameters are drawn per episode.
    """
    rng = split_rng(cfg.seed, "probe")
    n_train = cfg.probe_programs // 2
    masks = np.concatenate([rng.choice(train_sets, n_train, replace=len(train_sets) < n_train),
                            rng.choice(test_sets, cfg.probe_programs - n_train,
                                       replace=len(test_sets) < cfg.probe_programs - n_train)])
    # one step order per program that is feasible on typical inputs
    programs = episodes_for_label_sets(rng, masks, cfg, table).program
    p, e = len(programs), cfg.probe_episodes
    chosen: list[Episodes] = []
    for _ in range(max_rounds):
        if len(chosen) >= e:
            break
        j = 64  # candidate input sets per round
        inputs = np.repeat(episode_inputs(rng, j, cfg), p, axis=0)  # [j*p, S, 8, 8], input set major
        program = np.tile(programs, (j, 1))
        outputs = np.zeros_like(inputs)
        args = np.full((j * p, MAX_STEPS, 2), -1, np.int16)
        valid = np.zeros(j * p, bool)
        for _ in range(retries):  # redraw parameters (not inputs) for the failures
            todo = np.flatnonzero(~valid)
            if not len(todo):
                break
            o, a, v = apply_programs(rng, inputs[todo], program[todo], table)
            outputs[todo[v]], args[todo[v]], valid[todo[v]] = o[v], a[v], True
        good = np.flatnonzero(valid.reshape(j, p).all(axis=1))
        for g in good[: e - len(chosen)]:
            rows = np.arange(g * p, (g + 1) * p)
            chosen.append(Episodes(inputs[rows], outputs[rows], np.zeros((p, NUM_PRIMITIVES), np.uint8),
                                   program[rows], args[rows]))
    if len(chosen) < e:
        raise RuntimeError(f"generator: only {len(chosen)} of {e} probe input sets satisfy every probe program")
    probe = Episodes.concat(chosen)  # episode-major: row j * p + i
    order = np.arange(p * e).reshape(e, p).T.ravel()  # -> program-major: row i * e + j
    probe = probe.take(order)
    probe.labels = ((label_masks(probe.program)[:, None] >> np.arange(NUM_PRIMITIVES)) & 1).astype(np.uint8)
    return probe


def generate_dataset(cfg: DataConfig, progress=None) -> tuple[dict[str, Episodes], dict[str, list[int]]]:
    """All splits for ``cfg``, in the order of :data:`ALL_SPLITS` (see the module docstring).

    Returns the splits and the label sets (bitmasks) of :func:`label_set_partition`: train,
    novel2, dev, test. With ``cfg.novel2_fraction == 0`` there is no novel2 split and its list
    is empty. ``progress(name)`` is called once per name in ALL_SPLITS as that split is done (for
    novel2 also when it is not written).
    """
    table = signature_table()
    sets = label_set_partition(cfg, table)
    sizes = dict(train=cfg.n_train, val=cfg.n_val, test=cfg.n_test, fewshot=cfg.n_fewshot, dev=cfg.n_dev,
                 novel2=cfg.n_novel2)
    partner = {"val": "train", "fewshot": "test"}  # the partner's label sets, none of its episodes
    # episodes the split must not repeat (dev and novel2 have their own label sets; the hashes make
    # "no episode occurs in two splits" hold literally, even for byte-equal grids)
    avoid = {"val": ("train",), "fewshot": ("test",), "dev": ("train", "val", "test", "fewshot"),
             "novel2": ("train", "val", "test", "fewshot", "dev")}
    splits: dict[str, Episodes] = {}
    for name in ("train", "val", "test", "fewshot", "dev", "novel2"):
        label_sets = sets.get(name)
        if name in partner:
            label_sets = np.unique(label_masks(splits[partner[name]].program))
        if name == "novel2" and not len(label_sets):  # novel2_fraction 0: nothing held out, no split
            if progress:
                progress(name)
            continue
        hashes = None
        if name in avoid:
            hashes = np.concatenate([episode_hashes(splits[o].inputs, splits[o].outputs) for o in avoid[name]])
        splits[name] = generate_split(name, sizes[name], cfg, table, label_sets, hashes)
        if progress:
            progress(name)
    splits["probe"] = generate_probe(cfg, table, sets["train"], sets["test"])
    if progress:
        progress("probe")
    splits = {name: splits[name] for name in ALL_SPLITS if name in splits}
    return splits, {name: sets[name].tolist() for name in ("train", "novel2", "dev", "test")}


def split_checksum(episodes: Episodes) -> str:
    """SHA-256 over every array of a split (name, dtype, shape, bytes in C order)."""
    digest = hashlib.sha256()
    for name in Episodes.FIELDS:
        arr = np.ascontiguousarray(getattr(episodes, name))
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()
