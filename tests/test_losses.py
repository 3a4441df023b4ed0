"""Task losses, schedules, SAE loss / controller / monitor and the loss manager."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mcl.losses.manager as manager_mod
from mcl.config import ScheduleConfig, load_params
from mcl.losses.manager import LossManager, schedule_factor
from mcl.losses.sae import L1Controller, SaeMonitor, sae_loss
from mcl.losses.task import cross_entropy, hard_iou, soft_iou, task_loss

PARAMS = Path(__file__).parents[1] / "params.yaml"


def two_colour_grid():
    """Left half colour 0 (32 cells), right half colour 1 (32 cells)."""
    t = torch.zeros(1, 8, 8, dtype=torch.long)
    t[:, :, 4:] = 1
    return t


# ---------------------------------------------------------------------------
# task losses


def test_cross_entropy_hand_cases():
    target = two_colour_grid()
    uniform = torch.zeros(1, 10, 8, 8)
    assert cross_entropy(uniform, target).item() == pytest.approx(math.log(10), rel=1e-6)
    confident = 10.0 * F.one_hot(target, 10).permute(0, 3, 1, 2).double()
    assert cross_entropy(confident, target).item() == pytest.approx(math.log(1 + 9 * math.exp(-10)), rel=1e-9)
    # per-episode reduction: one uniform and one confident episode
    both = cross_entropy(torch.cat([uniform.double(), confident]), target.repeat(2, 1, 1), reduction="none")
    assert both.shape == (2,)
    assert both[0].item() == pytest.approx(math.log(10), rel=1e-6)
    assert both[1].item() == pytest.approx(math.log(1 + 9 * math.exp(-10)), rel=1e-9)


def test_soft_iou_hand_cases():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :5] = 1  # 40 cells colour 1, 24 cells colour 0
    # uniform probabilities p_c = 0.1: I_c = 0.1 n_c, U_c = 6.4 + n_c - 0.1 n_c
    expected = np.mean([0.1 * n / (6.4 + 0.9 * n) for n in (24, 40)])
    assert soft_iou(torch.zeros(1, 10, 8, 8), target).item() == pytest.approx(expected, rel=1e-6)
    confident = 20.0 * F.one_hot(target, 10).permute(0, 3, 1, 2).float()
    assert soft_iou(confident, target).item() == pytest.approx(1.0, abs=1e-6)
    # confidently wrong on every cell -> 0
    wrong = 20.0 * F.one_hot(target + 2, 10).permute(0, 3, 1, 2).float()
    assert soft_iou(wrong, target).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_iou_hand_cases():
    target = two_colour_grid()
    assert hard_iou(target, target).item() == 1.0
    pred = target.clone()
    pred[0, :4, 7] = 0  # 4 cells of colour 1 predicted as 0
    # colour 0: I = 32, U = 36; colour 1: I = 28, U = 32
    assert hard_iou(pred, target).item() == pytest.approx((32 / 36 + 28 / 32) / 2)
    pred = target.clone()
    pred[0, :2, 7] = 5  # a colour absent from the target counts with IoU 0
    assert hard_iou(pred, target).item() == pytest.approx((1.0 + 30 / 32 + 0.0) / 3)
    # batched, and agrees with soft_iou on confident logits
    batch_pred, batch_target = torch.cat([target, pred]), torch.cat([target, target])
    assert hard_iou(batch_pred, batch_target).tolist() == pytest.approx([1.0, (1.0 + 30 / 32) / 3])
    logits = 30.0 * F.one_hot(pred, 10).permute(0, 3, 1, 2).float()
    assert soft_iou(logits, target).item() == pytest.approx((1.0 + 30 / 32) / 2, abs=1e-5)  # target colours only


def test_task_loss_kinds():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 10, 8, 8, generator=g)
    target = torch.randint(0, 10, (3, 8, 8), generator=g)
    assert task_loss(logits, target, "ce").item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    expected = (1 - soft_iou(logits, target)).mean().item()
    assert 0.5 < expected < 1.0
    assert task_loss(logits, target, "iou").item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        task_loss(logits, target, "mse")


# ---------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize("kind,expected", [
    ("constant", [1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear_warmup", [0.0, 0.0, 0.5, 19 / 20, 1.0]),
    ("cosine", [0.0, 0.0, 0.5, (1 - math.cos(math.pi * 19 / 20)) / 2, 1.0]),
])
def test_schedule_factor_boundaries(kind, expected):
    cfg = ScheduleConfig(kind=kind, start=10, end=30)
    steps = [9, 10, 20, 29, 30]
    assert [schedule_factor(cfg, s) for s in steps] == pytest.approx(expected, abs=1e-12)
    assert schedule_factor(cfg, 10_000) == 1.0
    assert schedule_factor(cfg, 0) == (1.0 if kind == "constant" else 0.0)


# ---------------------------------------------------------------------------
# SAE


def test_sae_loss_hand_case():
    h = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    h_hat = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    z = torch.tensor([[0.0, 2.0, 0.0], [-1.0, 0.0, 3.0]])
    loss, m = sae_loss(h, h_hat, z, 0.1)
    # MSE = (0 + 1 + 1 + 0) / 4; L1 = mean(2, 4); centred h = +-[1, 1] -> sum of squares 4
    assert loss.item() == pytest.approx(0.5 + 0.1 * 3.0)
    assert m["sae_mse"] == pytest.approx(0.5)
    assert m["sae_l1"] == pytest.approx(3.0)
    assert m["sae_l0"] == pytest.approx(1.5)
    assert m["sae_active"] == pytest.approx(0.5)
    assert m["sae_nmse"] == pytest.approx(2.0 / 4.0)
    assert m["sae_explained_variance"] == pytest.approx(0.5)
    perfect = sae_loss(h, h.clone(), z, 0.0)[1]
    assert perfect["sae_explained_variance"] == pytest.approx(1.0) and perfect["sae_mse"] == 0.0


def test_l1_controller_update_rule():
    c = L1Controller(1e-3, target_active=0.1, rate=0.05)
    assert c.update(0.3) == pytest.approx(1e-3 * math.exp(0.05 * 2.0))
    c = L1Controller(1e-3, target_active=0.1, rate=0.05)
    assert c.update(0.05) == pytest.approx(1e-3 * math.exp(-0.025))
    assert c.update(0.1) == pytest.approx(1e-3 * math.exp(-0.025))  # on target: unchanged
    for _ in range(10_000):
        c.update(1.0)
    assert c.value == c.max_value
    restored = L1Controller(5.0, 0.1, 0.05)
    restored.load_state_dict(c.state_dict())
    assert restored.value == c.value


def _train_sae_with_controller(init_l1, enc_bias, seed, target=0.1, steps=400):
    """Tiny ReLU SAE on Gaussian h; returns (active fraction over the first 5, last 20 steps)."""
    torch.manual_seed(seed)
    d, n = 16, 64
    enc, dec = torch.nn.Linear(d, n), torch.nn.Linear(n, d)
    with torch.no_grad():
        enc.bias.fill_(enc_bias)
    params = [*enc.parameters(), *dec.parameters()]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    ctrl = L1Controller(init_l1, target, rate=0.05)
    history = []
    for t in range(1, steps + 1):
        h = torch.randn(128, d)
        z = torch.relu(enc(h))
        loss, m = sae_loss(h, dec(z), z, ctrl.value)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # plain Adam (torch.optim's first step imports torch._dynamo: seconds)
            for p, g, (m1, m2) in zip(params, grads, moments):
                m1.mul_(0.9).add_(g, alpha=0.1)
                m2.mul_(0.999).addcmul_(g, g, value=0.001)
                p.sub_(3e-2 * (m1 / (1 - 0.9**t)) / ((m2 / (1 - 0.999**t)).sqrt() + 1e-8))
        ctrl.update(m["sae_active"])
        history.append(m["sae_active"])
    return float(np.mean(history[:5])), float(np.mean(history[-20:]))


@pytest.mark.parametrize("init_l1,enc_bias", [(1e-3, 0.0), (1e-2, -1.5)], ids=["too_many_active", "too_few_active"])
def test_l1_controller_steers_active_fraction_to_target(init_l1, enc_bias):
    target = 0.1
    start, end = _train_sae_with_controller(init_l1, enc_bias, seed=0, target=target)
    assert abs(start - target) > 0.08  # starts far away: ~0.5 or ~0.01
    assert abs(end - target) < 0.25 * abs(start - target)
    assert abs(end - target) < 0.03


def test_sae_monitor_dead_fraction_and_histogram():
    mon = SaeMonitor(sae_dim=4, dead_window=3)
    fires = {0: [0, 1], 1: [0], 2: [0, 3], 3: [0], 4: [0], 5: [0]}  # step -> units active on one sample
    expected = {0: 0.0, 1: 0.0, 2: 0.25, 3: 0.5, 4: 0.5, 5: 0.75}
    for step in range(6):
        z = torch.zeros(2, 4)
        z[0, fires[step]] = 1.0
        mon.update(z, step)
        assert mon.dead_fraction(step) == pytest.approx(expected[step]), step
    # rates over 12 samples: unit 0 6/12, unit 1 1/12, unit 2 never, unit 3 1/12
    assert mon.firing_rate().tolist() == pytest.approx([0.5, 1 / 12, 0.0, 1 / 12])
    counts, edges = mon.log_density_histogram(bins=8, floor=-8.0)
    assert counts.sum() == 4 and len(edges) == 9
    assert counts[0] == 1  # the never-firing unit sits at the floor
    assert counts[np.searchsorted(edges, math.log10(1 / 12)) - 1] == 2
    # exact resume
    other = SaeMonitor(4, 3)
    other.load_state_dict(mon.state_dict())
    assert other.dead_fraction(5) == mon.dead_fraction(5)
    assert torch.equal(other.fire_count, mon.fire_count)


# ---------------------------------------------------------------------------
# manager


def _batch(G=4, m=4, d=16, n=32, P=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = G * m
    sets = (torch.rand(G, P, generator=g) < 0.4).to(torch.uint8)
    sets[:, 0] = 1  # every pair shares primitive 0
    return dict(
        logits=torch.randn(B, 10, 8, 8, generator=g, requires_grad=True),
        target=torch.randint(0, 10, (B, 8, 8), generator=g),
        h=torch.randn(B, d, generator=g, requires_grad=True),
        z=torch.relu(torch.randn(B, n, generator=g)).requires_grad_(True),
        h_hat=torch.randn(B, d, generator=g, requires_grad=True),
        aux_logits=torch.randn(B, P, generator=g, requires_grad=True),
        labels=sets.repeat_interleave(m, 0),
        groups=G,
    )


def _manager(**overrides):
    p = load_params(PARAMS, overrides=overrides)
    return LossManager(p.loss, h_dim=16, sae_dim=32), p


@pytest.mark.parametrize("task", ["ce", "iou"])
def test_manager_total_is_weighted_sum(task):
    mgr, p = _manager(**{"loss.task": task})
    b = _batch()
    step = 50  # beta warms up linearly over [0, 100) in params.yaml
    total, c = mgr(**b, step=step)
    assert c["w_beta"] == pytest.approx(p.loss.beta * schedule_factor(p.loss.schedule.beta, step))
    assert 0 < c["w_beta"] < p.loss.beta
    assert c["w_alpha"] == pytest.approx(p.loss.alpha) and c["w_gamma"] == pytest.approx(p.loss.gamma)
    expected = c["task"] + c["w_alpha"] * c["aux"] + c["w_beta"] * c["share"] + c["w_gamma"] * c["sae"]
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert c["loss"] == pytest.approx(total.item())
    assert c["share"] > 0 and c["share_pairs"] == 6
    assert c["task"] == pytest.approx(task_loss(b["logits"], b["target"], task).item(), rel=1e-6)
    assert c["aux"] == pytest.approx(F.binary_cross_entropy_with_logits(b["aux_logits"], b["labels"].float()).item())
    assert c["l1_coef"] == pytest.approx(p.loss.sae.l1)
    for key in ("sae_mse", "sae_l0", "sae_active", "sae_explained_variance", "sae_nmse", "sae_dead_fraction"):
        assert isinstance(c[key], float)
    assert all(isinstance(v, (int, float)) for v in c.values())
    total.backward()
    assert torch.isfinite(b["h"].grad).all()
    assert mgr.controller.value != p.loss.sae.l1  # the controller stepped after the loss
    coef = mgr.controller.value
    _, c2 = mgr(**_batch(seed=1), step=step + 1)
    assert c2["l1_coef"] == coef  # the next step uses the updated coefficient
    assert c2["sae"] == pytest.approx(c2["sae_mse"] + coef * c2["sae_l1"], rel=1e-6)


def test_manager_weights_follow_all_schedules():
    mgr, p = _manager(**{"loss.schedule.alpha.kind": "cosine", "loss.schedule.alpha.start": 10,
                         "loss.schedule.alpha.end": 30, "loss.schedule.gamma.kind": "linear_warmup",
                         "loss.schedule.gamma.start": 0, "loss.schedule.gamma.end": 40})
    _, c = mgr(**_batch(), step=20)
    assert c["w_alpha"] == pytest.approx(0.5 * p.loss.alpha)
    assert c["w_gamma"] == pytest.approx(0.5 * p.loss.gamma)
    assert c["w_beta"] == pytest.approx(0.2 * p.loss.beta)


def test_manager_beta_zero_skips_share(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("share_loss must not run when loss.beta == 0")

    monkeypatch.setattr(manager_mod, "share_loss", boom)
    mgr, _ = _manager(**{"loss.beta": 0.0})
    total, c = mgr(**_batch(), step=500)
    assert c["share"] == 0.0 and c["w_beta"] == 0.0 and "share_pairs" not in c
    assert total.item() == pytest.approx(c["task"] + c["w_alpha"] * c["aux"] + c["w_gamma"] * c["sae"], rel=1e-6)


def test_manager_scheduled_zero_beta_computes_share_without_gradient(monkeypatch):
    grad_modes = []
    real = manager_mod.share_loss

    def spy(*args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(manager_mod, "share_loss", spy)
    mgr, _ = _manager(**{"loss.sae.detach": False})  # so that h has a gradient to compare
    ref, _ = _manager(**{"loss.beta": 0.0, "loss.sae.detach": False})
    b, b_ref = _batch(seed=3), _batch(seed=3)
    total, c = mgr(**b, step=0)  # linear warm-up from step 0: weight 0
    total_ref, _ = ref(**b_ref, step=0)
    assert grad_modes == [False] and c["w_beta"] == 0.0 and c["share"] > 0  # logged, not trained
    total.backward()
    total_ref.backward()
    assert torch.equal(b["h"].grad, b_ref["h"].grad)
    mgr(**_batch(seed=4), step=10)
    assert grad_modes == [False, True]


def test_manager_state_dict_resumes_exactly():
    mgr, _ = _manager(**{"loss.share.ema": 0.9})
    assert mgr.bank is not None
    for step in range(3):
        mgr(**_batch(seed=step), step=step)
    assert len(mgr.bank) >= 4
    state = mgr.state_dict()
    resumed, _ = _manager(**{"loss.share.ema": 0.9})
    resumed.load_state_dict(state)
    _, a = mgr(**_batch(seed=7), step=3)
    _, b = resumed(**_batch(seed=7), step=3)
    assert a == b
    assert torch.equal(mgr.bank.bases, resumed.bank.bases)
    assert mgr.controller.value == resumed.controller.value
    assert _manager()[0].bank is None  # ema = 0 in params.yaml: no bank


@pytest.mark.parametrize("detach", [True, False])
def test_detached_sae_leaves_the_encoder_gradient_unchanged(detach):
    """loss.sae.detach: adding the SAE terms (gamma > 0) changes no encoder gradient; attached, it does."""
    from mcl.data.primitives import NUM_PRIMITIVES
    from mcl.models.model import MCLModel

    grads = []
    for gamma in (0.0, 1.0):
        p = load_params(PARAMS, overrides={"loss.gamma": gamma, "loss.beta": 0.0, "loss.sae.detach": detach,
                                           "model.d_model": 16, "model.n_heads": 2, "model.h_dim": 24,
                                           "model.sae_dim": 32})
        torch.manual_seed(0)
        model = MCLModel(p.model, NUM_PRIMITIVES)
        mgr = LossManager(p.loss, p.model.h_dim, p.model.sae_dim)
        g = torch.Generator().manual_seed(1)
        inputs = torch.randint(0, 10, (8, 4, 8, 8), generator=g)
        outputs = torch.randint(0, 10, (8, 4, 8, 8), generator=g)
        labels = torch.zeros(8, NUM_PRIMITIVES, dtype=torch.uint8)
        labels[:, 0] = 1
        out = model(inputs, outputs, detach_sae=detach)
        total, c = mgr(out.logits, outputs[:, -1].long(), out.h, out.z, out.h_hat, out.aux_logits, labels, 2, 0)
        assert c["sae"] > 0
        total.backward()
        grads.append(torch.cat([q.grad.flatten() for q in model.encoder.parameters()]))
    assert torch.equal(grads[0], grads[1]) == detach
