"""Training-side data access: grouped batch sampler, device-resident split, torch Dataset, online source."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mcl.data.dataset import DeviceSplit, EpisodeDataset, GroupedBatchSampler, OnlineSource, label_set_bitmask
from mcl.data.generator import Episodes, label_set_partition, signature_table, split_checksum
from mcl.data.primitives import run_programs


@pytest.fixture(scope="module")
def train(small_splits) -> Episodes:
    """A writable copy of the small train split (torch.from_numpy wants writable arrays)."""
    eps = small_splits["train"]
    return eps.take(np.arange(len(eps)))


def test_label_set_ids(train):
    ids = label_set_bitmask(train.labels)
    assert ids.dtype == np.int64 and ids.shape == (len(train),)
    expected = [sum(1 << int(p) for p in prog if p >= 0) for prog in train.program]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(label_set_bitmask(np.array([[1, 0, 1, 0], [0, 0, 0, 1]], np.uint8)), [5, 8])


# ---------------------------------------------------------------------------
# GroupedBatchSampler


@pytest.mark.parametrize("groups,m", [(4, 4), (8, 3), (1, 10)])
def test_grouped_batches(train, groups, m):
    ids = label_set_bitmask(train.labels)
    sampler = GroupedBatchSampler(ids, groups=groups, group_size=m, seed=0)
    for step in range(20):
        batch = sampler.batch(step)
        assert batch.shape == (groups * m,)
        assert batch.min() >= 0 and batch.max() < len(train)
        grouped = ids[batch].reshape(groups, m)  # group-major
        assert (grouped == grouped[:, :1]).all(), "a group mixes label sets"
        assert len(set(grouped[:, 0].tolist())) == groups, "two groups share a label set"
        for g in batch.reshape(groups, m):
            assert len(set(g.tolist())) == m, "an episode repeats within a group"


def test_grouped_sampler_deterministic(train):
    ids = label_set_bitmask(train.labels)
    a = GroupedBatchSampler(ids, groups=4, group_size=4, seed=3)
    b = GroupedBatchSampler(ids, groups=4, group_size=4, seed=3)
    c = GroupedBatchSampler(ids, groups=4, group_size=4, seed=4)
    for step in (0, 1, 17, 1000):
        np.testing.assert_array_equal(a.batch(step), b.batch(step))
    # resuming: batch `step` does not depend on what was drawn before
    fresh = GroupedBatchSampler(ids, groups=4, group_size=4, seed=3)
    np.testing.assert_array_equal(fresh.batch(17), a.batch(17))
    assert not np.array_equal(a.batch(0), a.batch(1))
    assert len({a.batch(s).tobytes() for s in range(10)}) == 10
    assert not np.array_equal(a.batch(5), c.batch(5))


def test_grouped_sampler_iteration(train):
    ids = label_set_bitmask(train.labels)
    sampler = GroupedBatchSampler(ids, groups=2, group_size=3, seed=1, num_batches=4)
    batches = list(sampler)
    assert len(sampler) == 4 and len(batches) == 4
    for step, batch in enumerate(batches):
        assert batch == sampler.batch(step).tolist()
    with pytest.raises(TypeError):
        len(GroupedBatchSampler(ids, groups=2, group_size=3, seed=1))


def test_grouped_sampler_skips_small_label_sets():
    ids = np.array([1] * 5 + [2] * 5 + [4] * 2 + [8] * 1)
    sampler = GroupedBatchSampler(ids, groups=2, group_size=3, seed=0)
    for step in range(30):
        assert set(ids[sampler.batch(step)].tolist()) == {1, 2}
    with pytest.raises(ValueError, match="label sets"):
        GroupedBatchSampler(ids, groups=3, group_size=3, seed=0)


def test_grouped_sampler_too_few_label_sets(train):
    ids = label_set_bitmask(train.labels)
    n_sets = len(np.unique(ids))
    GroupedBatchSampler(ids, groups=n_sets, group_size=2, seed=0)
    with pytest.raises(ValueError):
        GroupedBatchSampler(ids, groups=n_sets + 1, group_size=2, seed=0)
    with pytest.raises(ValueError):
        GroupedBatchSampler(ids, groups=2, group_size=len(train), seed=0)


# ---------------------------------------------------------------------------
# DeviceSplit / EpisodeDataset


def test_device_split_batch(train):
    split = DeviceSplit(train, "cpu")
    assert len(split) == len(train)
    np.testing.assert_array_equal(split.label_sets, label_set_bitmask(train.labels))
    index = [3, 0, 399, 3]
    batch = split.batch(index)
    assert set(batch) == {"inputs", "outputs", "labels", "program", "args"}
    s = train.inputs.shape[1]
    assert batch["inputs"].shape == (4, s, 8, 8) and batch["outputs"].shape == (4, s, 8, 8)
    assert batch["labels"].shape == (4, train.labels.shape[1])
    for f, t in batch.items():
        assert t.dtype == (torch.int16 if f in ("program", "args") else torch.uint8) and t.device.type == "cpu"
    for f in ("inputs", "outputs", "labels", "program", "args"):
        np.testing.assert_array_equal(batch[f].numpy(), getattr(train, f)[index])
    # a sampler batch indexes straight into the split
    ids = label_set_bitmask(train.labels)
    b = split.batch(GroupedBatchSampler(ids, 4, 4, seed=0).batch(0))
    assert b["inputs"].shape == (16, s, 8, 8)
    labels = b["labels"].numpy().reshape(4, 4, -1)
    assert (labels == labels[:, :1]).all()


def test_episode_dataset(train):
    ds = EpisodeDataset(train)
    assert len(ds) == len(train)
    item = ds[7]
    assert set(item) == {"inputs", "outputs", "labels", "program", "args"}
    assert item["inputs"].dtype == torch.uint8 and item["inputs"].shape == train.inputs.shape[1:]
    for f in item:
        np.testing.assert_array_equal(item[f].numpy(), getattr(train, f)[7])
    ids = label_set_bitmask(train.labels)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=GroupedBatchSampler(ids, 2, 3, seed=0, num_batches=2))
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["inputs"].shape == (6,) + train.inputs.shape[1:]
    np.testing.assert_array_equal(batches[1]["outputs"].numpy(),
                                  train.outputs[GroupedBatchSampler(ids, 2, 3, seed=0).batch(1)])


# ---------------------------------------------------------------------------
# OnlineSource


@pytest.fixture(scope="module")
def online(small_cfg):
    return OnlineSource(dataclasses.replace(small_cfg, online_buffer=96, source="online"))


def test_online_buffer_deterministic(online, small_cfg):
    a, b = online.buffer(0), online.buffer(0)
    assert split_checksum(a) == split_checksum(b)
    other = OnlineSource(dataclasses.replace(small_cfg, online_buffer=96, source="online"))
    assert split_checksum(other.buffer(2)) == split_checksum(online.buffer(2))
    assert split_checksum(online.buffer(1)) != split_checksum(a)
    reseeded = OnlineSource(dataclasses.replace(small_cfg, online_buffer=96, seed=small_cfg.seed + 1))
    assert split_checksum(reseeded.buffer(0)) != split_checksum(a)


def test_online_buffer_valid(online, small_cfg, small_dataset):
    eps = online.buffer(3)
    assert len(eps) == 96
    assert eps.inputs.shape == (96, small_cfg.demos + 1, 8, 8) and eps.inputs.dtype == np.uint8
    lengths = (eps.program >= 0).sum(axis=1)
    assert set(lengths.tolist()) <= {1, 2} and set(lengths.tolist()) == {1, 2}
    ids = label_set_bitmask(eps.labels)
    expected = [sum(1 << int(p) for p in prog if p >= 0) for prog in eps.program]
    np.testing.assert_array_equal(ids, expected)
    assert set(ids.tolist()) <= set(small_dataset[1]["train"])
    np.testing.assert_array_equal(online.label_sets, label_set_partition(small_cfg, signature_table())["train"])
    # outputs are the programs applied to the inputs, never a no-op, and identifiable
    n, s = eps.inputs.shape[:2]
    replay = run_programs(eps.inputs.reshape(n * s, 8, 8), np.repeat(eps.program, s, axis=0),
                          np.repeat(eps.args, s, axis=0)).reshape(eps.inputs.shape)
    np.testing.assert_array_equal(replay, eps.outputs)
    assert not (eps.outputs == eps.inputs).all(axis=(2, 3)).any()
    assert signature_table().identifiable(eps.program, eps.args).all()

