"""LoRA and bottleneck adapters, inserted in place around named ``nn.Linear`` layers.

Both start as exact no-ops (LoRA ``B = 0``, adapter ``up = 0``), so a model's outputs
are unchanged at insertion; only the inserted parameters are meant to be trained::

    names = insert_lora(model, model.adapter_targets, rank=4, alpha=8.0)
    n_trainable = freeze_except_inserted(model)
    opt = torch.optim.AdamW(inserted_parameters(model), lr=3e-3)
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Module):
    """``y = W x + b + (alpha / rank) * B A x`` around a frozen-or-not base ``nn.Linear``.

    Parameters
    ----------
    base : nn.Linear
        The wrapped layer (in_features -> out_features); kept as ``self.base``.
    rank : int
    alpha : float

    ``lora_A`` [rank, in] is Kaiming-uniform random, ``lora_B`` [out, rank] is zero.
    :meth:`merge` folds ``scaling * B @ A`` into ``base.weight``; :meth:`unmerge`
    removes it again. While merged, forward uses the base layer alone.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The low-rank update ``scaling * B @ A``, [out, in]."""
        return self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into ``base.weight`` (no-op if already merged)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from ``base.weight`` (no-op if not merged)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> y [..., out]."""
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


class Adapter(nn.Module):
    """Residual bottleneck adapter after a base layer: ``y = base(x) + up(gelu(down(base(x))))``.

    Parameters
    ----------
    base : nn.Linear
        The wrapped layer; kept as ``self.base``.
    dim : int
        Bottleneck width. ``down`` [out -> dim] is randomly initialised, ``up``
        [dim -> out] is zero, so the adapter starts as the identity.
    """

    def __init__(self, base: nn.Linear, dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"adapter dim must be >= 1, got {dim}")
        self.base = base
        w = base.weight
        self.down = nn.Linear(base.out_features, dim, device=w.device, dtype=w.dtype)
        self.up = nn.Linear(dim, base.out_features, device=w.device, dtype=w.dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> y [..., out]."""
        y = self.base(x)
        return y + self.up(F.gelu(self.down(y)))


# ---------------------------------------------------------------------------
# insertion and bookkeeping


def _resolve_linear(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Return (parent module, attribute) of the nn.Linear at dotted path ``name``."""
    parent_name, _, leaf = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
    except AttributeError:
        parent = None
    child = parent._modules.get(leaf) if parent is not None else None
    if child is None:
        raise ValueError(f"no submodule {name!r} in {type(model).__name__}")
    if type(child) is not nn.Linear:
        raise ValueError(f"submodule {name!r} is {type(child).__name__}, not nn.Linear")
    return parent, leaf


def _insert(model: nn.Module, names: Iterable[str], wrap) -> list[str]:
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate names in {names}")
    targets = [_resolve_linear(model, name) for name in names]  # check all before changing any
    for parent, leaf in targets:
        setattr(parent, leaf, wrap(getattr(parent, leaf)))
    return names


def insert_lora(model: nn.Module, names: Iterable[str], rank: int, alpha: float) -> list[str]:
    """Replace each named ``nn.Linear`` (dotted path, e.g. 'encoder.to_h') by a :class:`LoRALinear`.

    Raises ValueError naming the path if a name is missing or not an ``nn.Linear``
    (nothing is changed then). Returns the names replaced.
    """
    return _insert(model, names, lambda base: LoRALinear(base, rank, alpha))


def insert_adapter(model: nn.Module, names: Iterable[str], dim: int) -> list[str]:
    """Replace each named ``nn.Linear`` by an :class:`Adapter`; errors as :func:`insert_lora`."""
    return _insert(model, names, lambda base: Adapter(base, dim))


def merge_lora(model: nn.Module) -> int:
    """Merge every LoRALinear in ``model``; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    """Unmerge every LoRALinear in ``model``; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.unmerge()
    return len(layers)


def inserted_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters added by insertion: LoRA ``lora_A``/``lora_B`` and adapter ``down``/``up``."""
    params = []
    for m in model.modules():
        if isinstance(m, LoRALinear):
            params += [m.lora_A, m.lora_B]
        elif isinstance(m, Adapter):
            params += list(m.down.parameters()) + list(m.up.parameters())
    return params


def freeze_except_inserted(model: nn.Module) -> int:
    """Set requires_grad False on all parameters but the inserted ones; return the trainable count."""
    for p in model.parameters():
        p.requires_grad_(False)
    inserted = inserted_parameters(model)
    for p in inserted:
        p.requires_grad_(True)
    return sum(p.numel() for p in inserted)
