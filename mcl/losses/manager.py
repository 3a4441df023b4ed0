"""Weighted sum of the training losses, with schedules and the stateful loss helpers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mcl.config import LossConfig, ScheduleConfig
from mcl.losses.sae import L1Controller, SaeMonitor, sae_loss
from mcl.losses.share import EmaBasisBank, share_loss
from mcl.losses.task import task_loss

__all__ = ["schedule_factor", "LossManager"]


def schedule_factor(cfg: ScheduleConfig, step: int) -> float:
    """Weight multiplier in [0, 1] at training step ``step``.

    - ``constant``: 1
    - ``linear_warmup``: 0 for ``step < start``; ``(step - start) / (end - start)`` on
      ``[start, end)``; 1 for ``step >= end``
    - ``cosine``: as ``linear_warmup`` with ``(1 - cos(pi t)) / 2``, ``t = (step - start) / (end - start)``
    """
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind not in ("linear_warmup", "cosine"):
        raise ValueError(f"unknown schedule kind {cfg.kind!r}")
    if step < cfg.start:
        return 0.0
    if step >= cfg.end:
        return 1.0
    t = (step - cfg.start) / (cfg.end - cfg.start)
    return t if cfg.kind == "linear_warmup" else (1.0 - math.cos(math.pi * t)) / 2.0


class LossManager:
    """Combines the task, auxiliary, shared-subspace and SAE losses for one training step.

    ``total = task + alpha(t) * aux + beta(t) * share + gamma(t) * sae (+ cotrain * task loss of the
    executor given the true program, when given)`` where each weight is
    the configured value times :func:`schedule_factor`. ``aux`` is the mean binary
    cross-entropy of ``aux_logits`` against the multi-hot labels; ``share`` is
    :func:`~mcl.losses.share.share_loss` (skipped when ``loss.beta == 0``, computed without
    gradient while the scheduled weight is 0); ``sae`` is :func:`~mcl.losses.sae.sae_loss`
    with the controller's current L1 coefficient, on detached ``h`` when ``loss.sae.detach``
    (then only the SAE learns from it; the model must also have been run with ``detach_sae``).

    Parameters
    ----------
    cfg : the ``loss`` section of the params
    h_dim : task-vector width ``d`` (for the EMA basis bank)
    sae_dim : SAE units (for the monitor)
    l1_control : adapt the L1 coefficient with :class:`~mcl.losses.sae.L1Controller`
        (turn off for a top-k SAE, whose active fraction is fixed)
    seed : seed of the generator for fallback bases of degenerate groups

    Owns the :class:`L1Controller`, :class:`SaeMonitor` and, when ``loss.share.ema > 0``,
    the :class:`EmaBasisBank`; :meth:`state_dict` covers all three.
    """

    def __init__(self, cfg: LossConfig, h_dim: int, sae_dim: int, *, l1_control: bool = True, seed: int = 0):
        self.cfg = cfg
        self.h_dim, self.sae_dim = h_dim, sae_dim
        rate = cfg.sae.controller_rate if l1_control else 0.0
        self.controller = L1Controller(cfg.sae.l1, cfg.sae.target_active, rate)
        self.monitor = SaeMonitor(sae_dim, cfg.sae.dead_window)
        self.bank = EmaBasisBank(h_dim, cfg.share.k, cfg.share.ema) if cfg.share.ema > 0 and cfg.beta > 0 else None
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, step: int) -> dict[str, float]:
        """Scheduled weights ``alpha, beta, gamma`` at ``step``."""
        s = self.cfg.schedule
        return {
            "alpha": self.cfg.alpha * schedule_factor(s.alpha, step),
            "beta": self.cfg.beta * schedule_factor(s.beta, step),
            "gamma": self.cfg.gamma * schedule_factor(s.gamma, step),
        }

    def __call__(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        h: torch.Tensor,
        z: torch.Tensor,
        h_hat: torch.Tensor,
        aux_logits: torch.Tensor,
        labels: torch.Tensor,
        groups: int,
        step: int,
        update: bool = True,
        cotrain_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its components for one batch.

        Parameters
        ----------
        logits : [B, 10, 8, 8]; target : long [B, 8, 8]
        h, h_hat : [B, d]; z : [B, sae_dim]
        aux_logits : [B, P]; labels : multi-hot [B, P] (any dtype)
        groups : G, the batch being G groups of B / G episodes with one label set each
        step : training step (schedules, monitor)
        update : after computing the loss, step the L1 controller and the monitor and fold
            the bases into the EMA bank; pass False for evaluation batches
        cotrain_logits : [b, 10, 8, 8], the executor given the true program on the first b episodes
            of the batch; adds ``loss.cotrain`` times its task loss (component ``cotrain``)

        Returns
        -------
        total : scalar tensor
        components : floats: ``loss, task, aux, share, sae`` (unweighted terms),
            ``w_alpha, w_beta, w_gamma``, ``l1_coef`` (used in this step), share stats
            (when computed), SAE metrics and ``sae_dead_fraction``.
        """
        cfg = self.cfg
        w = self.weights(step)
        task = task_loss(logits, target, cfg.task)
        aux = F.binary_cross_entropy_with_logits(aux_logits, labels.to(aux_logits.dtype))
        l1_coef = self.controller.value
        # loss.sae.detach: the SAE observes h (the model fed it h.detach()); its terms train only the SAE
        sae, sae_metrics = sae_loss(h.detach() if cfg.sae.detach else h, h_hat, z, l1_coef)

        total = task + w["alpha"] * aux + w["gamma"] * sae
        comps: dict[str, float] = {}
        if cotrain_logits is not None:
            cotrain = task_loss(cotrain_logits, target[:len(cotrain_logits)], cfg.task)
            total = total + cfg.cotrain * cotrain
            comps["cotrain"] = float(cotrain.detach())
        share_value = 0.0
        if cfg.beta > 0:
            sc = cfg.share
            with torch.set_grad_enabled(torch.is_grad_enabled() and w["beta"] > 0):
                share, stats = share_loss(h, labels, groups, sc.k, sc.eps, detach=sc.detach, repel=sc.repel,
                                          bank=self.bank, generator=self.generator, update_bank=update,
                                          objective=sc.objective)
            if w["beta"] > 0:
                total = total + w["beta"] * share
            share_value = float(share.detach())
            comps.update({key: float(v) for key, v in stats.items()})

        if update:
            self.controller.update(sae_metrics["sae_active"])
            self.monitor.update(z, step)
        comps.update({
            "loss": float(total.detach()),
            "task": float(task.detach()),
            "aux": float(aux.detach()),
            "share": share_value,
            "sae": float(sae.detach()),
            "w_alpha": w["alpha"],
            "w_beta": w["beta"],
            "w_gamma": w["gamma"],
            "l1_coef": l1_coef,
            **sae_metrics,
            "sae_dead_fraction": self.monitor.dead_fraction(step),
        })
        return total, comps

    def state_dict(self) -> dict:
        return {
            "controller": self.controller.state_dict(),
            "monitor": self.monitor.state_dict(),
            "bank": None if self.bank is None else self.bank.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.monitor.load_state_dict(state["monitor"])
        if self.bank is not None and state.get("bank") is not None:
            self.bank.load_state_dict(state["bank"])
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
