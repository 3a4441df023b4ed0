"""Sparse-autoencoder loss, its L1 coefficient controller and a unit-activity monitor.

Shapes: ``h`` and ``h_hat`` [B, d] (task vector and its reconstruction), ``z`` [B, n]
(SAE code, ``n = sae_dim``). A unit is *active* on a sample when ``z != 0``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["sae_loss", "L1Controller", "SaeMonitor"]


def sae_loss(h: torch.Tensor, h_hat: torch.Tensor, z: torch.Tensor, l1_coef: float) -> tuple[torch.Tensor, dict]:
    """Reconstruction MSE plus an L1 sparsity penalty.

    ``loss = mean_{b,f} (h_hat - h)^2 + l1_coef * mean_b sum_u |z_bu|``.

    Metrics (plain floats), with ``h_bar`` the batch mean of ``h``:

    - ``sae_mse``: ``mean_{b,f} (h_hat - h)^2``
    - ``sae_l1``: ``mean_b sum_u |z_bu|``
    - ``sae_l0``: mean number of active units per sample
    - ``sae_active``: mean fraction of active units, ``sae_l0 / n``
    - ``sae_nmse``: ``sum_{b,f} (h_hat - h)^2 / sum_{b,f} (h - h_bar)^2``, i.e. the MSE over
      the mean squared norm of the centred ``h`` (both per sample, summed over features)
    - ``sae_explained_variance``: ``1 - sum_f MSE_f / sum_f Var_b(h_f)`` (biased variance),
      which by these definitions equals ``1 - sae_nmse``

    Returns
    -------
    loss : scalar tensor
    metrics : dict of floats
    """
    mse = (h_hat - h).pow(2).mean()
    l1 = z.abs().sum(-1).mean()
    loss = mse + l1_coef * l1
    with torch.no_grad():
        active = (z != 0).float()
        l0 = active.sum(-1).mean()
        sq_err = (h_hat - h).pow(2).sum()
        spread = (h - h.mean(0, keepdim=True)).pow(2).sum().clamp_min(torch.finfo(h.dtype).tiny)
        nmse = sq_err / spread
        metrics = {
            "sae_mse": float(mse),
            "sae_l1": float(l1),
            "sae_l0": float(l0),
            "sae_active": float(active.mean()),
            "sae_nmse": float(nmse),
            "sae_explained_variance": float(1.0 - nmse),
        }
    return loss, metrics


class L1Controller:
    """Multiplicative controller for the L1 coefficient that steers the active fraction.

    ``update(active)``: ``value *= exp(rate * (active - target) / target)``, clamped to
    ``[min_value, max_value]``. More active units than the target raise the penalty,
    fewer lower it; ``rate = 0`` keeps it fixed.
    """

    def __init__(self, init: float, target_active: float, rate: float,
                 min_value: float = 1e-8, max_value: float = 10.0):
        if not 0.0 < target_active < 1.0:
            raise ValueError(f"target_active must be in (0, 1), got {target_active}")
        self.target, self.rate = float(target_active), float(rate)
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.value = float(min(max(init, min_value), max_value))

    def update(self, active_frac: float) -> float:
        """Apply one step given the measured active fraction; returns the new value."""
        step = self.rate * (float(active_frac) - self.target) / self.target
        self.value = float(min(max(self.value * math.exp(step), self.min_value), self.max_value))
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class SaeMonitor:
    """Tracks, per SAE unit, the last step it fired and how often it fires."""

    def __init__(self, sae_dim: int, dead_window: int):
        self.sae_dim, self.dead_window = sae_dim, dead_window
        self.last_fired = torch.full((sae_dim,), -1, dtype=torch.long)  # -1: never
        self.fire_count = torch.zeros(sae_dim, dtype=torch.long)
        self.samples = 0
        self.first_step: int | None = None

    @torch.no_grad()
    def update(self, z: torch.Tensor, step: int) -> None:
        """Record the code ``z`` [B, n] of training step ``step``."""
        fired = (z.detach() != 0).sum(0).cpu()
        self.fire_count += fired
        self.last_fired[fired > 0] = int(step)
        self.samples += z.shape[0]
        if self.first_step is None:
            self.first_step = int(step)

    def dead_fraction(self, step: int) -> float:
        """Fraction of units that fired at no step ``s`` with ``step - dead_window < s <= step``.

        0.0 until ``dead_window`` steps have been recorded (``step - first_step + 1 >= dead_window``).
        """
        if self.first_step is None or step - self.first_step + 1 < self.dead_window:
            return 0.0
        dead = (self.last_fired < 0) | (self.last_fired <= step - self.dead_window)
        return float(dead.float().mean())

    def firing_rate(self) -> torch.Tensor:
        """Fraction of recorded samples on which each unit was active, [n]."""
        return self.fire_count.double() / max(self.samples, 1)

    def log_density_histogram(self, bins: int = 50, floor: float = -8.0) -> tuple[np.ndarray, np.ndarray]:
        """Histogram of ``log10`` firing rate per unit over ``[floor, 0]``.

        Units that never fired are placed at ``floor``. Returns ``(counts [bins], edges [bins + 1])``.
        """
        rate = self.firing_rate().numpy()
        logs = np.full(rate.shape, floor, dtype=np.float64)
        np.log10(rate, out=logs, where=rate > 0)
        return np.histogram(np.maximum(logs, floor), bins=bins, range=(floor, 0.0))

    def state_dict(self) -> dict:
        return {"last_fired": self.last_fired.clone(), "fire_count": self.fire_count.clone(),
                "samples": self.samples, "first_step": self.first_step, "dead_window": self.dead_window}

    def load_state_dict(self, state: dict) -> None:
        if state["last_fired"].shape != self.last_fired.shape:
            raise ValueError(f"monitor size mismatch: have {self.sae_dim} units, got {tuple(state['last_fired'].shape)}")
        self.last_fired = state["last_fired"].clone().long()
        self.fire_count = state["fire_count"].clone().long()
        self.samples = int(state["samples"])
        self.first_step = None if state["first_step"] is None else int(state["first_step"])
        self.dead_window = int(state["dead_window"])
