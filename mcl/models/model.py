"""The whole task-inference model in one file.

An episode holds S = demos + 1 pairs of 8x8 grids (colours 0..9). The encoder reads
the demonstration pairs and squeezes the task into a bottleneck vector ``h``; a sparse
autoencoder (SAE) re-expresses ``h`` as sparse codes ``z`` and a reconstruction
``h_hat``; the executor applies ``h`` (or ``h_hat``) to the query input grid and never
sees the demonstrations.

    inputs, outputs [B, S, 8, 8]
      demos = pairs [:, :-1] --encoder--> h [B, h_dim] --sae--> z [B, sae_dim], h_hat [B, h_dim]
      query = inputs[:, -1]  --executor(query, h or h_hat)--> logits [B, 10, 8, 8]
      h or z --aux_head--> aux_logits [B, P]  (primitive labels)

The oracle-task control (``model.encoder: oracle``) replaces the encoder by an embedding of
the true program (primitive and parameters per step): it bounds what task inference can reach.

Shape letters: B batch, k demonstration pairs, T tokens per grid = (8 / patch)^2,
d = d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mcl.config import ModelConfig

GRID = 8          # grid side, in cells
NUM_COLOURS = 10  # colours 0..9, 0 = background


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
        if demo_in.ndim != 4 or demo_in.shape != demo_out.shape or demo_in.shape[-2:] != (GRID, GRID):
            raise ValueError(f"demo_in and demo_out must both be [B, k, 8, 8], got {tuple(demo_in.shape)} "
                             f"and {tuple(demo_out.shape)}")
        k = demo_in.shape[1]
        if not 1 <= k <= self.max_demos:
            raise ValueError(f"number of demonstration pairs must be in 1..{self.max_demos}, got {k}")
        x = self.grid(torch.stack([demo_in, demo_out], dim=2))        # [B, k, 2, T, d]
        x = x + self.role.weight[None, None, :, None, :]
        x = self.fuse(torch.cat([x[:, :, 0], x[:, :, 1]], dim=-1))    # [B, k, T, d]
        return x + self.pair.weight[:k, None, :]


# ---------------------------------------------------------------------------
# encoders: forward(demo_in, demo_out) -> (h, acts)


class TransformerEncoder(nn.Module):
    """Pre-LN transformer over the tokens of all demonstration pairs plus a summary token.

    ``h = to_h(ln_f(summary token))``.
    """

    def __init__(self, cfg: ModelConfig, max_demos: int = 16):
        super().__init__()
        d = cfg.d_model
        self.embed = PairEmbed(d, cfg.patch, max_demos)
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
        x = torch.cat([self.summary.expand(B, -1, -1), x], dim=1)       # [B, 1 + kT, d]
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
        self.embed = PairEmbed(d, cfg.patch, max_demos)
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
    """Oracle-task control: the true program, not the demonstrations, gives the task vector.

    Each of the 3 steps is one token ``primitive * MAX_PARAMS + parameter row`` (a padding
    token for absent steps) plus a step-position embedding; the concatenated step vectors go
    through an MLP to ``h``. Same interface as the other encoders, with the program instead
    of the demonstrations.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from mcl.data.primitives import MAX_PARAMS, NUM_PRIMITIVES, PARAM_INDEX

        d = cfg.d_model
        self.register_buffer("param_index", torch.as_tensor(PARAM_INDEX), persistent=False)  # [P, 12, 12]
        self.max_params, self.pad = MAX_PARAMS, NUM_PRIMITIVES * MAX_PARAMS
        self.step = nn.Embedding(self.pad + 1, d)
        self.position = nn.Embedding(3, d)
        self.mlp = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.ln_f = nn.LayerNorm(d)
        self.to_h = nn.Linear(d, cfg.h_dim)

    def forward(self, program: torch.Tensor, args: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """program [B, 3] (primitive per step, -1 padding), args [B, 3, 2] -> (h [B, h_dim], acts)."""
        program, args = program.long(), args.long()
        prim = program.clamp_min(0)
        row = self.param_index[prim, args[..., 0] + 2, args[..., 1] + 2]                  # [B, 3]
        token = torch.where(program >= 0, prim * self.max_params + row, torch.full_like(prim, self.pad))
        x = self.step(token) + self.position.weight                                       # [B, 3, d]
        x = self.mlp(x.flatten(1))                                                        # [B, d]
        h = self.to_h(self.ln_f(x))
        return h, {"enc.0": x, "h": h}


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
    acts: name -> [B, width] ('enc.i', 'h', 'z').
    """

    logits: torch.Tensor
    h: torch.Tensor
    z: torch.Tensor
    h_hat: torch.Tensor
    aux_logits: torch.Tensor
    acts: dict[str, torch.Tensor]


class MCLModel(nn.Module):
    """Encoder -> bottleneck h -> (SAE, auxiliary head) and executor.

    Parameters
    ----------
    cfg : ModelConfig
    num_primitives : int
        P, width of the auxiliary multi-hot label head.
    max_demos : int
        Largest number of demonstration pairs the encoder accepts.
    """

    # linear layers next to the bottleneck, targets for LoRA / adapters in few-shot adaptation
    ADAPTER_TARGETS = ("encoder.to_h", "executor.film")

    def __init__(self, cfg: ModelConfig, num_primitives: int, max_demos: int = 16):
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
        self.sae = SparseAutoencoder(cfg.h_dim, cfg.sae_dim, cfg.sae_kind, cfg.sae_topk)
        self.executor = Executor(cfg)
        self.aux_head = nn.Linear(cfg.h_dim if cfg.aux_from == "h" else cfg.sae_dim, num_primitives)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def encode(self, demo_in: torch.Tensor, demo_out: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Demonstrations [B, k, 8, 8] -> (h [B, h_dim], acts)."""
        return self.encoder(demo_in.long(), demo_out.long())

    def execute(self, query: torch.Tensor, task_vec: torch.Tensor) -> torch.Tensor:
        """Query grid [B, 8, 8] and task vector [B, h_dim] -> logits [B, 10, 8, 8]."""
        return self.executor(query.long(), task_vec)

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor, program: torch.Tensor | None = None,
                args: torch.Tensor | None = None, detach_sae: bool = False) -> ModelOutput:
        """Run a batch of episodes.

        Parameters
        ----------
        inputs, outputs : uint8 or long Tensor [B, S, 8, 8]
            Pairs [:, :-1] are demonstrations, ``inputs[:, -1]`` is the query
            (``outputs[:, -1]`` is the target and is not read).
        program, args : [B, 3], [B, 3, 2]
            The true program; read only by the oracle encoder (``model.encoder: oracle``).
        detach_sae : the SAE reads ``h.detach()``, so its losses cannot shape the encoder

        Returns
        -------
        ModelOutput
        """
        if inputs.ndim != 4 or inputs.shape[1] < 2:
            raise ValueError(f"inputs must be [B, S >= 2, 8, 8], got {tuple(inputs.shape)}")
        if self.cfg.encoder == "oracle":
            if program is None or args is None:
                raise ValueError("the oracle encoder needs the true program and args")
            h, acts = self.encoder(program, args)                    # h [B, h_dim]
        else:
            h, acts = self.encode(inputs[:, :-1], outputs[:, :-1])   # h [B, h_dim]
        z, h_hat = self.sae(h.detach() if detach_sae else h)         # [B, sae_dim], [B, h_dim]
        task = h_hat if self.cfg.decode_from == "h_hat" else h
        logits = self.execute(inputs[:, -1], task)                   # [B, 10, 8, 8]
        aux_logits = self.aux_head(h if self.cfg.aux_from == "h" else z)  # [B, P]
        acts = dict(acts)
        acts["z"] = z
        return ModelOutput(logits=logits, h=h, z=z, h_hat=h_hat, aux_logits=aux_logits, acts=acts)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (optionally only those with requires_grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
