"""Loading episodes for training: a torch Dataset view, a device-resident split, the grouped sampler.

``DeviceSplit`` holds a whole split as uint8 tensors on the training device; batches are
made by indexing (no worker processes). ``GroupedBatchSampler`` yields batches of G groups
of m episodes sharing a label set, group-major, so ``h.view(G, m, d)`` gives the groups.
"""

from __future__ import annotations

import numpy as np
import torch

from mcl.config import DataConfig
from mcl.data.generator import Episodes, episode_hashes, episodes_for_label_sets, label_set_partition, signature_table

BATCH_FIELDS = ("inputs", "outputs", "labels", "program", "args")


class EpisodeDataset(torch.utils.data.Dataset):
    """``torch.utils.data.Dataset`` over a split: item i is a dict of uint8 tensors."""

    def __init__(self, episodes: Episodes):
        self.episodes = episodes

    def __len__(self):
        return len(self.episodes)

    def __getitem__(self, i):
        return {f: torch.from_numpy(np.ascontiguousarray(getattr(self.episodes, f)[i])) for f in BATCH_FIELDS}


class DeviceSplit:
    """A split as tensors on ``device``: inputs/outputs uint8 [N, S, 8, 8], labels uint8 [N, P],
    program int16 [N, 3], args int16 [N, 3, 2]."""

    def __init__(self, episodes: Episodes, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.tensors = {f: torch.from_numpy(np.ascontiguousarray(getattr(episodes, f))).to(self.device) for f in BATCH_FIELDS}
        self.label_sets = label_set_bitmask(episodes.labels)

    def __len__(self):
        return len(self.label_sets)

    def batch(self, index) -> dict[str, torch.Tensor]:
        """Episodes at ``index`` (array-like of ints) as a dict of device tensors."""
        index = torch.as_tensor(np.asarray(index), device=self.device)
        return {f: t[index] for f, t in self.tensors.items()}


def label_set_bitmask(labels: np.ndarray) -> np.ndarray:
    """Label set of each episode as a bitmask int64 [N] from multi-hot labels [N, P]."""
    return (labels.astype(np.int64) << np.arange(labels.shape[1])).sum(axis=1)


class GroupedBatchSampler:
    """Batches of ``groups`` label sets x ``group_size`` episodes each, group-major.

    Batch ``step`` is a pure function of ``(seed, step)``: label sets are drawn without
    replacement among those with at least ``group_size`` episodes, episodes without
    replacement within each label set. This makes resuming at any step exact.

    Parameters
    ----------
    label_sets : int64 [N], label-set id per episode (see :func:`label_set_bitmask`).
    """

    def __init__(self, label_sets: np.ndarray, groups: int, group_size: int, seed: int, num_batches: int | None = None):
        self.groups, self.group_size, self.seed, self.num_batches = groups, group_size, seed, num_batches
        keys, inverse = np.unique(label_sets, return_inverse=True)
        members = [np.flatnonzero(inverse == i) for i in range(len(keys))]
        self.members = [m for m in members if len(m) >= group_size]
        self.keys = np.array([k for k, m in zip(keys, members) if len(m) >= group_size])
        if len(self.members) < groups:
            raise ValueError(f"GroupedBatchSampler: need {groups} label sets with >= {group_size} episodes each, "
                             f"the split has {len(self.members)}")

    def batch(self, step: int) -> np.ndarray:
        """Episode indices int64 [groups * group_size] for batch ``step``."""
        rng = np.random.default_rng([self.seed, step])
        chosen = rng.choice(len(self.members), self.groups, replace=False)
        return np.concatenate([rng.choice(self.members[c], self.group_size, replace=False) for c in chosen])

    def __iter__(self):
        step = 0
        while self.num_batches is None or step < self.num_batches:
            yield self.batch(step).tolist()
            step += 1

    def __len__(self):
        if self.num_batches is None:
            raise TypeError("infinite sampler has no length")
        return self.num_batches


class RandomBatchSampler:
    """Batches of ``groups * group_size`` episodes drawn uniformly without replacement (no grouping).

    Same interface as :class:`GroupedBatchSampler` (``label_sets`` only sets the split size);
    batch ``step`` is a pure function of ``(seed, step)``. For the grouped-vs-random ablation.
    """

    def __init__(self, label_sets: np.ndarray, groups: int, group_size: int, seed: int):
        self.n, self.batch_size, self.seed = len(label_sets), groups * group_size, seed
        if self.n < self.batch_size:
            raise ValueError(f"RandomBatchSampler: batch of {self.batch_size} needs at least as many episodes, "
                             f"the split has {self.n}")

    def batch(self, step: int) -> np.ndarray:
        """Episode indices int64 [groups * group_size] for batch ``step``."""
        return np.random.default_rng([self.seed, step]).choice(self.n, self.batch_size, replace=False)


class OnlineSource:
    """Unlimited training episodes from the generator (``data.source: online``).

    Buffer ``r`` holds ``cfg.online_buffer`` fresh train-type episodes generated from the
    seed stream ``(cfg.seed, 'online', r)``, so any step can be reproduced without replay.
    Its label sets are the train split's (:func:`~mcl.data.generator.label_set_partition`): lengths
    1-2 without the novel2 hold-out, so it never produces a novel2, dev or test label set.
    Episodes of ``exclude`` (e.g. the val split) are never produced.
    """

    def __init__(self, cfg: DataConfig, exclude: Episodes | None = None):
        self.cfg = cfg
        self.table = signature_table()
        self.label_sets = label_set_partition(cfg, self.table)["train"]
        self.exclude = None if exclude is None else episode_hashes(exclude.inputs, exclude.outputs)

    def buffer(self, r: int) -> Episodes:
        rng = np.random.default_rng([self.cfg.seed, 1_000_003, r])
        masks = rng.permutation(np.resize(self.label_sets, self.cfg.online_buffer))
        return episodes_for_label_sets(rng, masks, self.cfg, self.table, exclude=self.exclude)
