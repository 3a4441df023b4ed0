"""Tests for mcl.models.adapters: LoRA / adapter insertion, merging, freezing."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mcl.config import load_params
from mcl.models.adapters import (Adapter, LoRALinear, freeze_except_inserted, insert_adapter, insert_lora,
                                 inserted_parameters, merge_lora, unmerge_lora)
from mcl.models.model import MCLModel

PARAMS = Path(__file__).parents[1] / "params.yaml"
TARGETS = MCLModel(load_params(PARAMS).model, num_primitives=8).adapter_targets


def make_model(encoder="transformer", seed=0):
    cfg = load_params(PARAMS, overrides={"model.encoder": encoder}).model
    torch.manual_seed(seed)
    return MCLModel(cfg, num_primitives=8).eval()


def episodes(B=4, S=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 10, (B, S, 8, 8), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (B, S, 8, 8), generator=g, dtype=torch.uint8))


def outputs_of(model, batch):
    with torch.no_grad():
        out = model(*batch)
    return torch.cat([out.logits.flatten(1), out.h, out.h_hat, out.z, out.aux_logits], dim=1)


def insert(model, method):
    if method == "lora":
        return insert_lora(model, TARGETS, rank=4, alpha=8.0)
    return insert_adapter(model, TARGETS, dim=16)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_insertion_leaves_outputs_unchanged(encoder, method):
    model = make_model(encoder)
    batch = episodes()
    before = outputs_of(model, batch)
    assert insert(model, method) == list(TARGETS)
    modules = dict(model.named_modules())
    wrapper = LoRALinear if method == "lora" else Adapter
    for name in TARGETS:
        assert isinstance(modules[name], wrapper)
        assert isinstance(modules[name + ".base"], nn.Linear)
    assert torch.allclose(outputs_of(model, batch), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_perturbing_inserted_weights_changes_outputs(method):
    model = make_model()
    batch = episodes()
    before = outputs_of(model, batch)
    insert(model, method)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0.0, 0.1)
            elif isinstance(m, Adapter):
                m.up.weight.normal_(0.0, 0.1)
    after = outputs_of(model, batch)
    assert not torch.allclose(after, before, atol=1e-4)


def test_lora_layer_math():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=3.0)
    x = torch.randn(7, 6)
    assert torch.equal(lora(x), base(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = x @ base.weight.t() + base.bias + 1.5 * x @ lora.lora_A.t() @ lora.lora_B.t()
    assert torch.allclose(lora(x), expected, atol=1e-5)


def test_adapter_layer_math():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    adapter = Adapter(base, dim=3)
    x = torch.randn(7, 6)
    assert torch.equal(adapter(x), base(x))
    with torch.no_grad():
        adapter.up.weight.normal_()
    y = base(x)
    assert torch.allclose(adapter(x), y + adapter.up(F.gelu(adapter.down(y))), atol=1e-6)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_merge_matches_unmerged_and_unmerge_restores(encoder):
    model = make_model(encoder)
    batch = episodes()
    insert_lora(model, TARGETS, rank=4, alpha=8.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0.0, 0.1)
    original = {n: model.get_submodule(n).base.weight.detach().clone() for n in TARGETS}
    unmerged = outputs_of(model, batch)
    assert merge_lora(model) == len(TARGETS)
    assert all(model.get_submodule(n).merged for n in TARGETS)
    assert not torch.allclose(model.get_submodule(TARGETS[0]).base.weight, original[TARGETS[0]])
    assert torch.allclose(outputs_of(model, batch), unmerged, atol=1e-5)  # no double counting
    merge_lora(model)  # merging twice is a no-op
    assert torch.allclose(outputs_of(model, batch), unmerged, atol=1e-5)
    assert unmerge_lora(model) == len(TARGETS)
    for n in TARGETS:
        assert not model.get_submodule(n).merged
        assert torch.allclose(model.get_submodule(n).base.weight, original[n], atol=1e-6)
    assert torch.allclose(outputs_of(model, batch), unmerged, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_freeze_except_inserted_trains_only_inserted(method):
    model = make_model().train()
    insert(model, method)
    inserted = inserted_parameters(model)
    assert len(inserted) == (2 if method == "lora" else 4) * len(TARGETS)
    n = freeze_except_inserted(model)
    inserted_ids = {id(p) for p in inserted}
    assert n == sum(p.numel() for p in inserted) > 0
    assert n == model.num_parameters(trainable_only=True)
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) in inserted_ids), name

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    inputs, outputs = episodes(8, 4)
    for _ in range(2):  # LoRA's A only gets a gradient once B is nonzero
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs, outputs).logits, outputs[:, -1].long()).backward()
        with torch.no_grad():  # plain SGD step over every parameter that received a gradient
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.1 * p.grad
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (id(p) in inserted_ids), name


def test_bad_names_raise_and_change_nothing():
    model = make_model()
    with pytest.raises(ValueError, match="encoder.nope"):
        insert_lora(model, ["encoder.to_h", "encoder.nope"], rank=2, alpha=2.0)
    assert type(model.encoder.to_h) is nn.Linear  # nothing inserted when one name is bad
    with pytest.raises(ValueError, match="no_such.module"):
        insert_adapter(model, ["no_such.module"], dim=4)
    with pytest.raises(ValueError, match="'sae'"):
        insert_lora(model, ["sae"], rank=2, alpha=2.0)  # exists but is not nn.Linear
    with pytest.raises(ValueError, match="encoder.blocks"):
        insert_adapter(model, ["encoder.blocks"], dim=4)
    insert_lora(model, ["encoder.to_h"], rank=2, alpha=2.0)
    with pytest.raises(ValueError, match="encoder.to_h"):
        insert_lora(model, ["encoder.to_h"], rank=2, alpha=2.0)  # already wrapped
    assert inserted_parameters(make_model()) == []
