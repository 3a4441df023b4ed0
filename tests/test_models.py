"""Tests for mcl.models.model: shapes, executor isolation, gradients, SAE constraints."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mcl.config import load_params
from mcl.models.model import GridEmbed, MCLModel, SparseAutoencoder, one_hot_grid, unpatchify

PARAMS = Path(__file__).parents[1] / "params.yaml"
P = 8  # primitives


def make_cfg(**overrides):
    sae = {"loss.sae.detach": False} if overrides.get("decode_from") == "h_hat" else {}  # detach needs decode_from h
    return load_params(PARAMS, overrides={**sae, **{f"model.{k}": v for k, v in overrides.items()}}).model


def test_oracle_encoder_reads_the_program_not_the_demonstrations():
    """The oracle-task control: h is a function of (program, args) alone; every step token is distinct."""
    from mcl.data.primitives import PRIMITIVES

    model = make_model(encoder="oracle")
    inputs, outputs = episodes(2, 4)
    first = [tuple(int(v) for v in prim.param_table[0]) for prim in PRIMITIVES]   # a valid (a, b) per primitive
    program = torch.tensor([[0, 2, -1], [1, -1, -1]], dtype=torch.int16)
    args = torch.tensor([[first[0], first[2], (-1, -1)], [first[1], (-1, -1), (-1, -1)]], dtype=torch.int16)
    out = model(inputs, outputs, program, args)
    other = model(*episodes(2, 4, seed=5), program, args)
    assert torch.equal(out.h, other.h)                       # demonstrations are not read
    assert not torch.equal(out.h[0], out.h[1])
    with pytest.raises(ValueError, match="true program"):
        model(inputs, outputs)
    # every (primitive, parameters) step gets its own slot, the padding step another; slots do not
    # depend on the step's position, so a step seen first or second in training reads the same third
    steps = [(p, a, b) for p, prim in enumerate(PRIMITIVES) for a, b in prim.param_table.tolist()]
    prog = torch.tensor([[p, -1, -1] for p, _, _ in steps] + [[-1, -1, -1]], dtype=torch.int16)
    arg = torch.tensor([[(a, b), (-1, -1), (-1, -1)] for _, a, b in steps] + [[(-1, -1)] * 3], dtype=torch.int16)
    with torch.no_grad():
        slots = model.encoder(prog, arg)[0].view(len(prog), 3, -1)
    assert len({tuple(v.tolist()) for v in slots[:, 0]}) == len(steps) + 1
    with torch.no_grad():                                    # the executor skips the passes of absent steps
        h = model.encoder(program, args)[0]
        assert torch.equal(model(inputs, outputs, program, args).logits,
                           model.executor(inputs[:, -1].long(), h, program >= 0))
        assert not torch.equal(out.logits, model.executor(inputs[:, -1].long(), h))
    late = torch.tensor([[-1, -1, 5]], dtype=torch.int16), torch.tensor([[(-1, -1), (-1, -1), (3, -1)]], dtype=torch.int16)
    first = torch.tensor([[5, -1, -1]], dtype=torch.int16), torch.tensor([[(3, -1), (-1, -1), (-1, -1)]], dtype=torch.int16)
    with torch.no_grad():
        assert torch.equal(model.encoder(*late)[0].view(3, -1)[2], model.encoder(*first)[0].view(3, -1)[0])


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MCLModel(make_cfg(**overrides), num_primitives=P).eval()


def episodes(B=4, S=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 10, (B, S, 8, 8), generator=g, dtype=torch.uint8)
    outputs = torch.randint(0, 10, (B, S, 8, 8), generator=g, dtype=torch.uint8)
    return inputs, outputs


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
@pytest.mark.parametrize("sae_kind", ["l1", "topk"])
@pytest.mark.parametrize("decode_from", ["h", "h_hat"])
@pytest.mark.parametrize("aux_from", ["h", "z"])
def test_output_shapes(encoder, sae_kind, decode_from, aux_from):
    cfg = make_cfg(encoder=encoder, sae_kind=sae_kind, decode_from=decode_from, aux_from=aux_from)
    torch.manual_seed(0)
    model = MCLModel(cfg, num_primitives=P).eval()
    B, S = 3, 4
    out = model(*episodes(B, S))
    assert out.logits.shape == (B, 10, 8, 8)
    assert out.h.shape == (B, cfg.h_dim)
    assert out.h_hat.shape == (B, cfg.h_dim)
    assert out.z.shape == (B, cfg.sae_dim)
    assert out.aux_logits.shape == (B, P)
    names = [f"enc.{i}" for i in range(cfg.n_layers)] + ["h", "z"]
    assert list(out.acts) == names
    for name, a in out.acts.items():
        assert a.ndim == 2 and a.shape[0] == B, name
    assert torch.equal(out.acts["h"], out.h) and torch.equal(out.acts["z"], out.z)
    for t in (out.logits, out.h, out.z, out.h_hat, out.aux_logits):
        assert torch.isfinite(t).all()
    # decode_from picks what the executor receives
    task = out.h_hat if decode_from == "h_hat" else out.h
    assert torch.allclose(model.execute(episodes(B, S)[0][:, -1], task), out.logits, atol=1e-6)


@pytest.mark.parametrize("patch", [1, 2, 4, 8])
@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_patch_sizes_and_demo_counts(patch, encoder):
    model = make_model(encoder=encoder, patch=patch)
    for S in (2, 17):  # 1 and 16 demonstrations
        out = model(*episodes(2, S))
        assert out.logits.shape == (2, 10, 8, 8)
    with pytest.raises(ValueError, match="1..16"):
        model(*episodes(2, 18))


@pytest.mark.parametrize("patch", [1, 2, 4, 8])
def test_unpatchify_inverts_patch_embedding_layout(patch):
    # A patch embedding whose kernel copies every (colour, row, col) of a patch into its
    # own channel, followed by unpatchify, must give back the one-hot grid.
    embed = GridEmbed(10 * patch * patch, patch)
    with torch.no_grad():
        embed.proj.weight.copy_(torch.eye(10 * patch * patch).reshape(-1, 10, patch, patch))
        embed.proj.bias.zero_()
        embed.pos.zero_()
    grid = torch.randint(0, 10, (3, 8, 8))
    assert torch.equal(unpatchify(embed(grid), patch), one_hot_grid(grid))


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_executor_cannot_see_demonstrations(encoder, monkeypatch):
    model = make_model(encoder=encoder)
    inputs, outputs = episodes(4, 4, seed=0)
    other_in, other_out = episodes(4, 4, seed=1)
    other_in[:, -1] = inputs[:, -1]  # same query, different demonstrations

    # the demonstrations do determine h
    h1, _ = model.encode(inputs[:, :-1], outputs[:, :-1])
    h2, _ = model.encode(other_in[:, :-1], other_out[:, :-1])
    assert not torch.allclose(h1, h2)

    # with h held fixed, different demonstrations give identical logits
    fixed = torch.randn(4, model.cfg.h_dim)
    monkeypatch.setattr(model, "encode", lambda di, do: (fixed, {"h": fixed}))
    a = model(inputs, outputs).logits
    b = model(other_in, other_out).logits
    assert torch.equal(a, b)
    assert torch.equal(a, model.execute(inputs[:, -1], fixed))

    # ... while the executor does use its two arguments (a shift of every entry alone would be invisible to
    # the routing executor, which layer-normalises each slot)
    other_h = fixed + torch.randn(fixed.shape, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(model.execute(inputs[:, -1], fixed), model.execute(inputs[:, -1], other_h))
    assert not torch.allclose(model.execute(inputs[:, -1], fixed), model.execute(other_in[:, 0], fixed))


def test_query_target_is_not_read():
    model = make_model()
    inputs, outputs = episodes(4, 4)
    changed = outputs.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 10
    assert torch.equal(model(inputs, outputs).logits, model(inputs, changed).logits)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
@pytest.mark.parametrize("sae_kind", ["l1", "topk"])
@pytest.mark.parametrize("decode_from,aux_from", [("h", "h"), ("h_hat", "z")])
def test_gradients_reach_every_parameter(encoder, sae_kind, decode_from, aux_from):
    model = make_model(encoder=encoder, sae_kind=sae_kind, decode_from=decode_from, aux_from=aux_from).train()
    inputs, outputs = episodes(8, 4)
    labels = torch.randint(0, 2, (8, P), generator=torch.Generator().manual_seed(3)).float()
    out = model(inputs, outputs)
    loss = (F.cross_entropy(out.logits, outputs[:, -1].long())
            + F.binary_cross_entropy_with_logits(out.aux_logits, labels)
            + F.mse_loss(out.h_hat, out.h))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("kind", ["l1", "topk"])
def test_sae_decoder_columns_unit_norm(kind):
    sae = SparseAutoencoder(16, 40, kind=kind, topk=5)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(1, 40) * 10 + 0.1)  # raw columns far from unit norm
    norms = sae.decoder_weight().norm(dim=0)
    assert torch.allclose(norms, torch.ones(40), atol=1e-5)
    # forward uses the normalised decoder
    z, h_hat = sae(torch.randn(6, 16))
    assert torch.allclose(h_hat, z @ sae.decoder_weight().t() + sae.b_dec, atol=1e-6)
    assert (z >= 0).all()


def test_sae_topk_sparsity():
    sae = SparseAutoencoder(16, 64, kind="topk", topk=5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: ReLU alone would keep all 64
    z, _ = sae(torch.randn(32, 16))
    nnz = (z != 0).sum(dim=1)
    assert (nnz <= 5).all() and (nnz == 5).all()
    # the kept units are the largest pre-activations
    h = torch.randn(8, 16)
    pre = (h - sae.b_dec) @ sae.W_enc.t() + sae.b_enc
    kept = sae.encode(h) != 0
    expected = torch.zeros_like(kept).scatter(1, pre.topk(5, dim=1).indices, True)
    assert torch.equal(kept, expected)


def test_model_topk_nonzeros_per_row():
    model = make_model(sae_kind="topk", sae_topk=7)
    out = model(*episodes(16, 4))
    assert ((out.z != 0).sum(dim=1) <= 7).all()


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_determinism_under_manual_seed(encoder):
    a, b = make_model(seed=5, encoder=encoder, dropout=0.1), make_model(seed=5, encoder=encoder, dropout=0.1)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = make_model(seed=6, encoder=encoder)
    assert not torch.equal(c.encoder.to_h.weight, a.encoder.to_h.weight)
    batch = episodes(4, 4)
    a.train(), b.train()
    torch.manual_seed(1)
    la = a(*batch).logits
    torch.manual_seed(1)
    lb = b(*batch).logits
    assert torch.equal(la, lb)


def test_dropout_is_active_only_in_train_mode():
    model = make_model(dropout=0.5)
    batch = episodes(4, 4)
    assert torch.equal(model(*batch).logits, model(*batch).logits)
    model.train()
    assert not torch.equal(model(*batch).logits, model(*batch).logits)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_default_size_and_api(encoder):
    model = make_model(encoder=encoder)
    assert model.num_parameters() < 1_000_000
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    for name in model.adapter_targets:
        assert isinstance(modules[name], torch.nn.Linear)
    assert modules["encoder.to_h"].out_features == model.cfg.h_dim


def test_cotrain_pass_is_the_executor_given_the_true_program():
    """forward(cotrain=k) runs the inferred and the true-program task vectors through one executor pass:
    its cotrain_logits are the executor applied to the first k queries with the program encoder's task."""
    from mcl.data.primitives import PRIMITIVES

    torch.manual_seed(0)
    model = MCLModel(make_cfg(), num_primitives=P, cotrain=True).eval()
    inputs, outputs = episodes(3, 4)
    ab = [tuple(int(v) for v in prim.param_table[0]) for prim in PRIMITIVES]
    program = torch.tensor([[0, 2, -1], [1, -1, -1], [5, 6, 3]], dtype=torch.int16)
    args = torch.tensor([[ab[0], ab[2], (-1, -1)], [ab[1], (-1, -1), (-1, -1)], [ab[5], ab[6], ab[3]]], dtype=torch.int16)
    with torch.no_grad():
        out = model(inputs, outputs, program, args, cotrain=2)
        alone = model(inputs, outputs, program, args)
        direct = model.execute(inputs[:2, -1], model.program_encoder(program[:2], args[:2])[0])
    assert out.cotrain_logits.shape == (2, 10, 8, 8) and alone.cotrain_logits is None
    assert torch.allclose(out.cotrain_logits, direct, atol=1e-5)
    assert torch.allclose(out.logits, alone.logits, atol=1e-5)     # the inferred task's logits are unchanged
    assert not torch.allclose(out.cotrain_logits, out.logits[:2], atol=1e-3)
    with pytest.raises(ValueError, match="program encoder"):
        make_model()(inputs, outputs, program, args, cotrain=2)
