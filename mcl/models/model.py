"""The whole task-inference model in one file.

An episode holds S = demos + 1 pairs of 8x8 grids (colours 0..9). The encoder reads
the demonstration pairs and squeezes the task into a bottleneck vector ``h``; a sparse
autoencoder (SAE) re-expresses ``h`` as sparse codes ``z`` and a reconstruction
``h_hat``; the executor applies ``h`` (or ``h_hat``) to the query input grid and never
sees the demonstrations.

    inputs, outputs [B, S, 8, 8]
      demos = pairs [:, :-1] --demo embedding--> tokens --encoder--> h [B, h_dim]
      h --sae--> z [B, sae_dim], h_hat [B, h_dim]
      query = inputs[:, -1]  --executor(query, h or h_hat)--> logits [B, 10, 8, 8]
      h or z --aux_head--> aux_logits [B, P]  (primitive labels)

Choices (``model.*``):

* demo embedding: ``correspondence`` (one token per pair from where its output cells come from
  under the grid's symmetries, :mod:`mcl.models.correspondence`) or ``patch`` (T patch tokens
  per pair, input and output fused per position);
* encoder: ``transformer`` (blocks over the tokens plus a summary token) or ``gru`` (over the
  pairs); ``oracle`` replaces the encoder by an embedding of the true program (the oracle-task
  control: it bounds what task inference can reach);
* executor: ``routing`` (one program step per pass, cells moved by task-selected gathers,
  :mod:`mcl.models.routing`) or ``transformer`` (FiLM-modulated blocks over patch tokens).

With ``cotrain`` the model also holds a program encoder whose task vector the executor is
trained on alongside (``loss.cotrain``); evaluation never uses it.

Shape letters: B batch, k demonstration pairs, T tokens per grid = (8 / patch)^2,
d = d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mcl.config import ModelConfig
from mcl.data.primitives import COLOURS as NUM_COLOURS, SIZE as GRID  # grid side; colours 0..9, 0 = background
from mcl.models.correspondence import CorrespondenceEmbed
from mcl.models.routing import RoutingExecutor


# ---------------------------------------------------------------------------
# building blocks


class GridEmbed(nn.Module):
    """One-hot grid -> Conv2d patch embedding -> tokens, plus learned positions.

    Parameters
    ----------
    d_model : int
        Token width.
    patch : int
        Patch side (1, 2, 4 or 8); gives T = (8 / patch)^2 tokens per grid.
    """

    def __init__(self, d_model: int, patch: int):
        super().__init__()
        self.n_tokens = (GRID // patch) ** 2
        self.proj = nn.Conv2d(NUM_COLOURS, d_model, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(self.n_tokens, d_model) * 0.02)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """Embed long grids [..., 8, 8] into tokens [..., T, d]."""
        lead = grid.shape[:-2]
        x = one_hot_grid(grid.reshape(-1, GRID, GRID), self.proj.weight.dtype)  # [N, 10, 8, 8]
        x = self.proj(x).flatten(2).transpose(1, 2)                            # [N, T, d], token t = row * (8/p) + col
        x = x + self.pos
        return x.reshape(*lead, self.n_tokens, x.shape[-1])


def one_hot_grid(grid: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Long grids [N, 8, 8] -> one-hot channels [N, 10, 8, 8]."""
    return F.one_hot(grid, NUM_COLOURS).permute(0, 3, 1, 2).to(dtype)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Per-token logits [B, T, 10 * patch * patch] -> per-cell logits [B, 10, 8, 8].

    Token ``t`` covers the patch at row ``t // (8 / patch)``, column ``t % (8 / patch)``
    (the order of :class:`GridEmbed`); its features are ordered (colour, row in patch,
    column in patch), the layout of ``F.pixel_shuffle``.
    """
    B, T, C = x.shape
    side = GRID // patch
    x = x.transpose(1, 2).reshape(B, C, side, side)  # [B, 10*p*p, 8/p, 8/p]
    return F.pixel_shuffle(x, patch)                 # [B, 10, 8, 8]


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens (no mask)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # [B, H, T, C/H]
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)                              # [B, T, C]
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


def check_pairs(demo_in: torch.Tensor, demo_out: torch.Tensor, max_demos: int) -> None:
    """Raise ValueError unless both are [B, k, 8, 8] with 1 <= k <= max_demos."""
    if demo_in.ndim != 4 or demo_in.shape != demo_out.shape or demo_in.shape[-2:] != (GRID, GRID):
        raise ValueError(f"demo_in and demo_out must both be [B, k, 8, 8], got {tuple(demo_in.shape)} "
                         f"and {tuple(demo_out.shape)}")
    if not 1 <= demo_in.shape[1] <= max_demos:
        raise ValueError(f"number of demonstration pairs must be in 1..{max_demos}, got {demo_in.shape[1]}")


class PairEmbed(nn.Module):
    """Demonstration pairs -> one token per (pair, patch position).

    Both grids of a pair are patch-embedded (shared :class:`GridEmbed`) and marked with a
    role embedding (input / output); the input and output tokens at the same position are
    concatenated and fused by a small MLP; a pair-index embedding is added. Fusing per
    position halves the encoder's sequence compared with separate input/output tokens
    (the cells of an input and its output line up, as every grid is 8x8). After the
    concatenation the role embeddings act as a learned bias of the first fuse layer.
    """

    def __init__(self, d_model: int, patch: int, max_demos: int):
        super().__init__()
        self.max_demos = max_demos
        self.grid = GridEmbed(d_model, patch)
        self.n_tokens = self.grid.n_tokens
        self.role = nn.Embedding(2, d_model)           # 0 = input grid, 1 = output grid
        self.pair = nn.Embedding(max_demos, d_model)   # demonstration index
        self.fuse = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> torch.Tensor:
        """Long [B, k, 8, 8] pairs -> tokens [B, k, T, d]."""
        check_pairs(demo_in, demo_out, self.max_demos)
        k = demo_in.shape[1]
        x = self.grid(torch.stack([demo_in, demo_out], dim=2))        # [B, k, 2, T, d]
        x = x + self.role.weight[None, None, :, None, :]
        x = self.fuse(torch.cat([x[:, :, 0], x[:, :, 1]], dim=-1))    # [B, k, T, d]
        return x + self.pair.weight[:k, None, :]


# ---------------------------------------------------------------------------
# encoders: forward(demo_in, demo_out) -> (h, acts)


def demo_embedding(cfg: ModelConfig, max_demos: int) -> nn.Module:
    """The ``model.demo_embed`` module: pairs [B, k, 8, 8] -> tokens [B, k, T, d] (T = 1 for correspondence)."""
    if cfg.demo_embed == "correspondence":
        return CorrespondenceTokens(cfg.d_model, max_demos)
    return PairEmbed(cfg.d_model, cfg.patch, max_demos)


class CorrespondenceTokens(nn.Module):
    """:class:`~mcl.models.correspondence.CorrespondenceEmbed` as one token per pair, plus a pair-index embedding."""

    n_tokens = 1

    def __init__(self, d_model: int, max_demos: int):
        super().__init__()
        self.max_demos = max_demos
        self.embed = CorrespondenceEmbed(d_model)
        self.pair = nn.Embedding(max_demos, d_model)

    def forward(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> torch.Tensor:
        """Long [B, k, 8, 8] pairs -> tokens [B, k, 1, d]."""
        check_pairs(demo_in, demo_out, self.max_demos)
        x = self.embed(demo_in, demo_out)                             # [B, k, d]
        return (x + self.pair.weight[:x.shape[1]])[:, :, None]


class TransformerEncoder(nn.Module):
    """Pre-LN transformer over the tokens of all demonstration pairs plus a summary token.

    The summary token enters as a learned vector plus the mean of the pair tokens (so h depends on
    the demonstrations from the first step); ``h = to_h(ln_f(summary token))``.
    """

    def __init__(self, cfg: ModelConfig, max_demos: int = 16):
        super().__init__()
        d = cfg.d_model
        self.embed = demo_embedding(cfg, max_demos)
        self.summary = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.to_h = nn.Linear(d, cfg.h_dim)

    def forward(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Infer the task vector.

        Parameters
        ----------
        demo_in, demo_out : LongTensor [B, k, 8, 8]

        Returns
        -------
        h : Tensor [B, h_dim]
        acts : dict
            'enc.i' -> [B, d] block outputs mean-pooled over tokens, then 'h' -> [B, h_dim].
        """
        x = self.embed(demo_in, demo_out)                               # [B, k, T, d]
        B = x.shape[0]
        x = x.reshape(B, -1, x.shape[-1])                               # [B, kT, d]
        x = torch.cat([self.summary + x.mean(dim=1, keepdim=True), x], dim=1)  # [B, 1 + kT, d], summary starts at the mean
        x = self.drop(x)
        acts = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            acts[f"enc.{i}"] = x.mean(dim=1)                            # [B, d]
        h = self.to_h(self.ln_f(x[:, 0]))                               # [B, h_dim]
        acts["h"] = h
        return h, acts


class GRUEncoder(nn.Module):
    """GRU over the sequence of demonstration pairs.

    The T fused tokens of each pair (:class:`PairEmbed`) are flattened and projected to
    one d-vector; ``n_layers`` stacked single-layer GRUs read the k pair vectors;
    ``h = to_h(ln_f(last output))``.
    """

    def __init__(self, cfg: ModelConfig, max_demos: int = 16):
        super().__init__()
        d = cfg.d_model
        self.embed = demo_embedding(cfg, max_demos)
        self.pair_proj = nn.Linear(self.embed.n_tokens * d, d)
        self.drop = nn.Dropout(cfg.dropout)
        # one module per layer so that every layer's outputs are visible in acts
        self.grus = nn.ModuleList([nn.GRU(d, d, batch_first=True) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.to_h = nn.Linear(d, cfg.h_dim)

    def forward(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Infer the task vector; same interface as :meth:`TransformerEncoder.forward`.

        acts holds 'enc.i' -> [B, d] (layer-i GRU outputs mean-pooled over pairs), then 'h'.
        """
        x = self.embed(demo_in, demo_out)                                 # [B, k, T, d]
        x = self.pair_proj(x.flatten(2))                                  # [B, k, d]
        acts = {}
        for i, gru in enumerate(self.grus):
            x, _ = gru(self.drop(x))                                      # [B, k, d]
            acts[f"enc.{i}"] = x.mean(dim=1)                              # [B, d]
        h = self.to_h(self.ln_f(x[:, -1]))                                # [B, h_dim]
        acts["h"] = h
        return h, acts


class ProgramEncoder(nn.Module):
    """The true program, not the demonstrations, gives the task vector (oracle-task control, co-training).

    Step t (of 3) is embedded as ``primitive + first argument + second argument`` (one embedding
    table each; the argument tables are shared by the primitives, so colour 3 is one vector whether
    it is a recolour, border or fill colour; a padding embedding for absent steps), mapped by one
    MLP shared by the steps to a slot of ``h_dim / 3``; ``h`` is the three slots in order. Sharing
    the MLP across steps lets a primitive seen as step 1 or 2 in training be read as step 3.
    """

    ARG_VALUES = 12  # (a, b) range over -2..9

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from mcl.data.generator import MAX_STEPS
        from mcl.data.primitives import NUM_PRIMITIVES

        if cfg.h_dim % MAX_STEPS:
            raise ValueError(f"the program encoder needs h_dim divisible by {MAX_STEPS}, got {cfg.h_dim}")
        d = cfg.d_model
        self.num_primitives = NUM_PRIMITIVES
        self.primitive = nn.Embedding(NUM_PRIMITIVES + 1, d)            # + padding
        self.first_arg = nn.Embedding(self.ARG_VALUES, d)
        self.second_arg = nn.Embedding(self.ARG_VALUES, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU())
        self.to_h = nn.Linear(2 * d, cfg.h_dim // MAX_STEPS)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation (unit-variance embeddings): distinct programs start far apart."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, program: torch.Tensor, args: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """program [B, 3] (primitive per step, -1 padding), args [B, 3, 2] -> (h [B, h_dim], acts)."""
        program, args = program.long(), args.long()
        present = program >= 0
        x = self.primitive(torch.where(present, program, self.num_primitives))          # [B, 3, d]
        x = x + present[..., None] * (self.first_arg(args[..., 0] + 2) + self.second_arg(args[..., 1] + 2))
        x = self.mlp(x)                                                                  # [B, 3, 2d]
        h = self.to_h(x).flatten(1)                                                      # [B, h_dim]
        return h, {"enc.0": x.mean(dim=1), "h": h}


# ---------------------------------------------------------------------------
# sparse autoencoder on the bottleneck


class SparseAutoencoder(nn.Module):
    """Sparse autoencoder ``z = ReLU(W_enc (h - b_dec) + b_enc)``, ``h_hat = W_dec z + b_dec``.

    The decoder columns are normalised to unit norm inside every forward, so the
    constraint holds whatever the optimiser does to the raw ``W_dec``.

    Parameters
    ----------
    h_dim, sae_dim : int
        Input width and number of units.
    kind : {'l1', 'topk'}
        'topk' keeps the ``topk`` largest pre-activations per sample (then ReLU) and
        zeroes the rest; 'l1' is a plain ReLU (sparsity comes from the loss).
    topk : int
    """

    def __init__(self, h_dim: int, sae_dim: int, kind: str = "l1", topk: int = 16):
        super().__init__()
        if kind not in ("l1", "topk"):
            raise ValueError(f"sae kind must be 'l1' or 'topk', got {kind!r}")
        self.kind = kind
        self.topk = topk
        w = torch.randn(h_dim, sae_dim)
        w = w / w.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w)                       # [h_dim, sae_dim]
        self.W_enc = nn.Parameter(w.t().clone())           # [sae_dim, h_dim], tied at init
        self.b_enc = nn.Parameter(torch.zeros(sae_dim))
        self.b_dec = nn.Parameter(torch.zeros(h_dim))

    def decoder_weight(self) -> torch.Tensor:
        """W_dec with unit-norm columns, [h_dim, sae_dim]."""
        return self.W_dec / self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-8)

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, h_dim] -> z [B, sae_dim] (non-negative)."""
        pre = (h - self.b_dec) @ self.W_enc.t() + self.b_enc          # [B, sae_dim]
        if self.kind == "topk":
            vals, idx = pre.topk(self.topk, dim=-1)                   # [B, topk]
            return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
        return F.relu(pre)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, sae_dim] -> h_hat [B, h_dim]."""
        return z @ self.decoder_weight().t() + self.b_dec

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (z [B, sae_dim], h_hat [B, h_dim])."""
        z = self.encode(h)
        return z, self.decode(z)


# ---------------------------------------------------------------------------
# executor: (query grid, task vector) -> output logits


class Executor(nn.Module):
    """Apply a task vector to a query grid; sees nothing but its two arguments.

    The query is patch-embedded (own embedding), FiLM-modulated by the task vector
    (``x * (1 + gamma) + beta``), prefixed with a task token, passed through pre-LN
    blocks, and each patch token is decoded to patch*patch*10 logits that are
    pixel-shuffled back to the grid. A learned skip ``copy_scale * onehot(query)``
    makes copying the query easy.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.patch = cfg.patch
        self.embed = GridEmbed(d, cfg.patch)
        self.film = nn.Linear(cfg.h_dim, 2 * d)
        self.task_token = nn.Linear(cfg.h_dim, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.executor_layers)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.patch * cfg.patch * NUM_COLOURS)
        self.copy_scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, query: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Predict the output grid.

        Parameters
        ----------
        query : LongTensor [B, 8, 8]
        task : Tensor [B, h_dim]

        Returns
        -------
        logits : Tensor [B, 10, 8, 8]
        """
        x = self.embed(query)                                         # [B, T, d]
        gamma, beta = self.film(task).chunk(2, dim=-1)                # [B, d] each
        x = x * (1 + gamma[:, None]) + beta[:, None]
        x = torch.cat([self.task_token(task)[:, None], x], dim=1)     # [B, 1 + T, d]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.ln_f(x[:, 1:]))                            # [B, T, p*p*10]
        logits = unpatchify(x, self.patch)                            # [B, 10, 8, 8]
        return logits + self.copy_scale * one_hot_grid(query, logits.dtype)


# ---------------------------------------------------------------------------
# full model


@dataclass
class ModelOutput:
    """Everything one forward pass produces.

    logits [B, 10, 8, 8]; h, h_hat [B, h_dim]; z [B, sae_dim]; aux_logits [B, P];
    acts: name -> [B, width] ('enc.i', 'h', 'z'); cotrain_logits [cotrain, 10, 8, 8]: the executor
    given the true program of the first ``cotrain`` episodes (None unless asked for).
    """

    logits: torch.Tensor
    h: torch.Tensor
    z: torch.Tensor
    h_hat: torch.Tensor
    aux_logits: torch.Tensor
    acts: dict[str, torch.Tensor]
    cotrain_logits: torch.Tensor | None = None


class MCLModel(nn.Module):
    """Encoder -> bottleneck h -> (SAE, auxiliary head) and executor.

    Parameters
    ----------
    cfg : ModelConfig
    num_primitives : int
        P, width of the auxiliary multi-hot label head.
    max_demos : int
        Largest number of demonstration pairs the encoder accepts.
    cotrain : bool
        Also hold a :class:`ProgramEncoder` (``program_encoder``): the task vector of the true program
        the executor is co-trained on (``forward(cotrain=...)``). Ignored by the oracle.
    """

    def __init__(self, cfg: ModelConfig, num_primitives: int, max_demos: int = 16, cotrain: bool = False):
        super().__init__()
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads})")
        self.cfg = cfg
        self.num_primitives = num_primitives
        if cfg.encoder == "transformer":
            self.encoder = TransformerEncoder(cfg, max_demos)
        elif cfg.encoder == "gru":
            self.encoder = GRUEncoder(cfg, max_demos)
        elif cfg.encoder == "oracle":
            self.encoder = ProgramEncoder(cfg)
        else:
            raise ValueError(f"unknown encoder {cfg.encoder!r}")
        self.program_encoder = ProgramEncoder(cfg) if cotrain and cfg.encoder != "oracle" else None
        self.sae = SparseAutoencoder(cfg.h_dim, cfg.sae_dim, cfg.sae_kind, cfg.sae_topk)
        if cfg.executor == "routing":
            self.executor = RoutingExecutor(cfg.h_dim, cfg.d_model, cfg.executor_steps)
        else:
            self.executor = Executor(cfg)
        self.aux_head = nn.Linear(cfg.h_dim if cfg.aux_from == "h" else cfg.sae_dim, num_primitives)
        self.apply(self._init_weights)
        for module in self.modules():
            if isinstance(module, (CorrespondenceEmbed, RoutingExecutor, ProgramEncoder)):
                module.reset_parameters()  # their own initial form, not the transformer's N(0, 0.02)

    @property
    def adapter_targets(self) -> tuple[str, ...]:
        """Linear layers next to the bottleneck, targets for LoRA / adapters in few-shot adaptation."""
        return ("encoder.to_h", "executor.control.1" if self.cfg.executor == "routing" else "executor.film")

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def cotrain_episodes(self, requested: int) -> int:
        """Episodes of a batch to co-train the executor on: ``requested`` if the model has a program
        encoder (``train.cotrain_episodes``), else 0."""
        return requested if self.program_encoder is not None else 0

    def encode(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Demonstrations [B, k, 8, 8] -> (h [B, h_dim], acts)."""
        return self.encoder(demo_in.long(), demo_out.long())

    def execute(self, query: torch.Tensor, task_vec: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Query grid [B, 8, 8] and task vector [B, h_dim] -> logits [B, 10, 8, 8]; ``present`` bool [B, 3]:
        the program steps that exist (routing executor only: the passes of the others are skipped)."""
        if present is None:
            return self.executor(query.long(), task_vec)
        return self.executor(query.long(), task_vec, present)

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor, program: torch.Tensor | None = None,
                args: torch.Tensor | None = None, detach_sae: bool = False, cotrain: int = 0) -> ModelOutput:
        """Run a batch of episodes.

        Parameters
        ----------
        inputs, outputs : uint8 or long Tensor [B, S, 8, 8]
            Pairs [:, :-1] are demonstrations, ``inputs[:, -1]`` is the query
            (``outputs[:, -1]`` is the target and is not read).
        program, args : [B, 3], [B, 3, 2]
            The true program; read only by the oracle encoder (``model.encoder: oracle``).
        detach_sae : the SAE reads ``h.detach()``, so its losses cannot shape the encoder
        cotrain : the executor also applies the true program to the first ``cotrain`` episodes, in the
            same pass (``ModelOutput.cotrain_logits``; needs the program encoder)

        Returns
        -------
        ModelOutput
        """
        if inputs.ndim != 4 or inputs.shape[1] < 2:
            raise ValueError(f"inputs must be [B, S >= 2, 8, 8], got {tuple(inputs.shape)}")
        if cotrain and self.program_encoder is None:
            raise ValueError("this model has no program encoder (built without cotrain)")
        present = None                                               # every pass runs unless the oracle says
        if self.cfg.encoder == "oracle":
            if program is None or args is None:
                raise ValueError("the oracle encoder needs the true program and args")
            h, acts = self.encoder(program, args)                    # h [B, h_dim]
            if self.cfg.executor == "routing" and self.executor.steps == program.shape[1]:
                present = program >= 0                               # [B, 3]: absent steps pass the grid unchanged
        else:
            h, acts = self.encode(inputs[:, :-1], outputs[:, :-1])   # h [B, h_dim]
        z, h_hat = self.sae(h.detach() if detach_sae else h)         # [B, sae_dim], [B, h_dim]
        task = h_hat if self.cfg.decode_from == "h_hat" else h
        query = inputs[:, -1]
        if cotrain:                                                  # one executor pass for both
            task = torch.cat([task, self.program_encoder(program[:cotrain], args[:cotrain])[0]])
            query = torch.cat([query, query[:cotrain]])
        logits = self.execute(query, task, present)                  # [B + cotrain, 10, 8, 8]
        logits, cotrain_logits = logits[:len(h)], (logits[len(h):] if cotrain else None)
        aux_logits = self.aux_head(h if self.cfg.aux_from == "h" else z)  # [B, P]
        acts = dict(acts)
        acts["z"] = z
        return ModelOutput(logits=logits, h=h, z=z, h_hat=h_hat, aux_logits=aux_logits, acts=acts,
                           cotrain_logits=cotrain_logits)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (optionally only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
