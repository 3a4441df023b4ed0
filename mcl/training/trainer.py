"""The training loop behind `mcl train`: one arm, one seed, one run directory.

AdamW with linear warmup, a constant stretch and a final cosine decay (``train.lr_decay``), gradient clipping and accumulation, bf16
autocast on CUDA (off on CPU), batches from :class:`GroupedBatchSampler` over a
device-resident split. The state after every completed step is a pure function of
(params, arm, seed, step), so a run killed and resumed from its last checkpoint ends with
exactly the metrics of an uninterrupted run on CPU.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from mcl.config import ConfigError, Params, arm_params, run_name, to_dict
from mcl.data.dataset import DeviceSplit, GroupedBatchSampler, OnlineSource, RandomBatchSampler
from mcl.data.store import open_store
from mcl.errors import NonFiniteLossError
from mcl.evaluation.forward import evaluate_split, primitive_alone_masks
from mcl.evaluation.metrics import per_episode, summarise
from mcl.io import check_writable, write_text
from mcl.losses.manager import LossManager
from mcl.measures.geometry import manipulation_metrics
from mcl.models.model import MCLModel
from mcl.models.build import build_model, resolve_device
from mcl.models.checkpoint import load_checkpoint, save_checkpoint
from mcl.training.logger import RunLogger


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, base: float, warmup: int, total: int, decay: float = 1.0) -> float:
    """Learning rate at ``step``: linear warmup over ``warmup`` steps, constant, then cosine decay to 5% of
    ``base`` over the last ``decay`` fraction of ``total`` (``decay`` 1: cosine from the end of warmup)."""
    if step < warmup:
        return base * (step + 1) / warmup
    start = max(warmup, total - decay * total)
    progress = (step - start) / max(1, total - start)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress)))))


def _finite_model(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


class BatchSource:
    """The training batch of every draw: from the stored train split, or from online buffers that are
    regenerated every ``data.online_buffer`` episodes, each with its own sampler (a pure function of
    the draw index, so resuming is exact)."""

    def __init__(self, p: Params, train_split: DeviceSplit | None, online: OnlineSource | None, device, seed: int):
        cfg = p.train
        self.split, self.online, self.device, self.cfg = train_split, online, device, cfg
        self.make_sampler = RandomBatchSampler if cfg.sampler == "random" else GroupedBatchSampler
        self.seed = seed * 1_000_003 + 17
        self.steps_per_buffer = max(1, p.data.online_buffer // cfg.batch_size)
        self.sampler = self.buffer_round = None

    def batch(self, draw: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.online is not None:
            if self.buffer_round != draw // self.steps_per_buffer:
                self.buffer_round = draw // self.steps_per_buffer
                self.split = DeviceSplit(self.online.buffer(self.buffer_round), self.device)
                self.sampler = self.make_sampler(self.split.label_sets, cfg.groups, cfg.group_size,
                                                 self.seed + self.buffer_round)
        elif self.sampler is None:
            self.sampler = self.make_sampler(self.split.label_sets, cfg.groups, cfg.group_size, self.seed)
        return self.split.batch(self.sampler.batch(draw))


@dataclass
class StepResult:
    """What one optimiser step leaves for the log: mean loss components, per-episode train metrics and
    the manipulation check (filled only on logged steps), the gradient norm, or what went non-finite."""

    comps: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, list] = field(default_factory=dict)
    manip: dict[str, float] = field(default_factory=dict)
    grad_norm: float = float("nan")
    bad: str | None = None


def train_step(model: MCLModel, optimizer, losses: LossManager, source: BatchSource, p: Params, step: int,
               log_now: bool, autocast: bool) -> StepResult:
    """One optimiser step over ``train.grad_accum`` micro-batches; the step is skipped (no update) when a
    loss component or the gradient is non-finite (``StepResult.bad`` names it)."""
    cfg = p.train
    optimizer.zero_grad(set_to_none=True)
    r = StepResult()
    for micro in range(cfg.grad_accum):
        b = source.batch(step * cfg.grad_accum + micro)
        target = b["outputs"][:, -1].long()
        with torch.autocast(source.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(b["inputs"], b["outputs"], b["program"], b["args"], detach_sae=p.loss.sae.detach,
                        cotrain=model.cotrain_episodes(cfg.cotrain_episodes))
            cotrain = out.cotrain_logits.float() if out.cotrain_logits is not None else None
        total, comps = losses(out.logits.float(), target, out.h.float(), out.z.float(), out.h_hat.float(),
                              out.aux_logits.float(), b["labels"], cfg.groups, step,
                              update=micro == cfg.grad_accum - 1,  # controller/monitor/bank step once per step
                              cotrain_logits=cotrain)
        bad = [k for k in ("task", "cotrain", "aux", "share", "sae", "loss") if not math.isfinite(comps.get(k, 0.0))]
        if bad:
            r.bad = bad[0]
            break
        (total / cfg.grad_accum).backward()
        for k, v in comps.items():
            r.comps[k] = r.comps.get(k, 0.0) + v / cfg.grad_accum
        if log_now:
            for k, v in per_episode(out.logits.detach().argmax(dim=1), target).items():
                r.metrics.setdefault(k, []).append(v)
            # manipulation check, in both arms (no gradient): did the share loss shape h?
            r.manip = manipulation_metrics(out.h.float(), b["labels"], cfg.groups, p.loss.share.k, p.loss.share.eps)
    if r.bad is None:
        r.grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                           cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
        if not math.isfinite(r.grad_norm):
            r.bad = "gradient"
    return r


def train_row(r: StepResult, lr: float, skipped: int, dead_fraction: float) -> dict[str, float]:
    """The logged row of one step's :class:`StepResult` (``train/*``, ``manip/*``, lr, skipped steps)."""
    row = {f"train/{k}": v for k, v in r.comps.items()}
    row.update({f"train/{k}": v for k, v in summarise({k: torch.cat(v) for k, v in r.metrics.items()}).items()
                if k != "episodes"} if r.metrics else {})
    row.update({"lr": lr, "skipped_steps": skipped, "grad_norm": r.grad_norm if r.bad is None else float("nan")})
    row["train/sae_dead_fraction"] = dead_fraction
    row.update({f"manip/{k}": v for k, v in r.manip.items()})
    return row


@dataclass
class Validation:
    """The splits a run is scored on while it trains: val (its first ``train.val_episodes``), the
    length-1 val episodes of each primitive, and optional extra curve splits."""

    split: DeviceSplit
    index: np.ndarray
    alone: dict[str, torch.Tensor]
    curves: dict[str, DeviceSplit]

    def row(self, model: MCLModel, p: Params, autocast: bool) -> dict[str, float]:
        """``val_alone/<primitive>`` and ``val/*`` exact match of ``model`` now."""
        values = evaluate_split(model, self.split, self.index, p.eval.batch_size, autocast)
        row = {f"val_alone/{name}": summarise(values, mask)["exact_match"] for name, mask in self.alone.items()}
        row.update({f"val/{k}": v for k, v in summarise(values).items() if k != "episodes"})
        return row

    def curve_row(self, model: MCLModel, p: Params, autocast: bool) -> dict[str, float]:
        """``<curve split>/*`` of ``model`` now, on the first ``train.val_episodes`` of each curve split."""
        row = {}
        for name, split in self.curves.items():
            cm = summarise(evaluate_split(model, split, np.arange(min(p.train.val_episodes, len(split))),
                                          p.eval.batch_size, autocast))
            row.update({f"{name}/{k}": v for k, v in cm.items() if k != "episodes"})
        return row


def open_splits(p: Params, device, curves: tuple[str, ...]) -> tuple[Validation, DeviceSplit | None, OnlineSource | None]:
    """The validation splits, the stored train split (None with ``data.source: online``) and the online source."""
    store = open_store(p.data.store)
    val = store.load("val")
    index = np.arange(min(p.train.val_episodes, len(val)))
    validation = Validation(DeviceSplit(val, device), index,
                            primitive_alone_masks(val.take(index)),  # per-primitive learning curves
                            {name: DeviceSplit(store.load(name), device) for name in curves})
    online = OnlineSource(p.data, exclude=val) if p.data.source == "online" else None
    return validation, None if online else DeviceSplit(store.load("train"), device), online


def prepare(p: Params, seed: int) -> tuple[torch.device, bool]:
    """Check the params, fix threads and seeds; the device and whether bf16 autocast is on."""
    if p.train.sampler == "random" and p.loss.beta > 0:
        raise ConfigError("train.sampler random leaves no label-set groups for the share loss: "
                          "use it with loss.beta 0 (the baseline or oracle arm)")
    device = resolve_device(p.train.device)
    torch.set_num_threads(p.train.threads)  # fixed, so a run gives the same bytes alone or in a pool
    seed_everything(seed)
    return device, device.type == "cuda" and torch.cuda.is_bf16_supported()


def restore(path: Path, model: MCLModel, optimizer, losses: LossManager, config: dict, device) -> tuple[int, float, int]:
    """Load the state of ``path`` (``--resume``) into model, optimiser, losses and the RNG;
    ``(step, best val IoU, skipped steps)`` to go on from, ``(0, -1, 0)`` without a checkpoint."""
    if not path.exists():
        print(f"--resume: no checkpoint at {path}; training from step 0", file=sys.stderr)
        return 0, -1.0, 0
    state = load_checkpoint(path, config["model"], map_location=device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    losses.load_state_dict(state["loss_manager"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), float(state["best_val_iou"]), int(state["skipped"])


def train(params: Params, arm: str, seed: int, run_dir: str | os.PathLike, metrics_dir: str | os.PathLike,
          resume: bool = False, progress=True, tensorboard: bool = True, curves: tuple[str, ...] = ()) -> dict:
    """Train one model; write checkpoints and config to ``run_dir``, logs to ``metrics_dir``.

    ``progress``: True for a tqdm bar, False for none, or a callable given each completed
    step (the process pool's shared bar). Returns the final summary (best and last val metrics).
    """
    from tqdm import tqdm

    p = arm_params(params, arm)
    cfg = p.train
    run_dir, metrics_dir = Path(run_dir), Path(metrics_dir)
    check_writable(run_dir, metrics_dir)
    device, autocast = prepare(p, seed)

    validation, train_split, online = open_splits(p, device, curves)
    model = build_model(p, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = LossManager(p.loss, p.model.h_dim, p.model.sae_dim, l1_control=p.model.sae_kind == "l1", seed=seed)
    config = to_dict(p)

    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    start, best_iou, skipped = restore(last_path, model, optimizer, losses, config, device) if resume else (0, -1.0, 0)
    _write_config(run_dir / "config.yaml", config, arm, seed)
    logger = RunLogger(metrics_dir, run_dir / "tb" if tensorboard else None, resume_step=start if start else None)

    def state_dict(step: int) -> dict:
        return {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loss_manager": losses.state_dict(), "rng": torch.get_rng_state(), "best_val_iou": best_iou,
                "skipped": skipped, "config": config, "arm": arm, "seed": seed}

    source = BatchSource(p, train_split, online, device, seed)
    step_times: list[float] = []
    t_start = time.perf_counter()
    model.train()
    on_step = progress if callable(progress) else None
    bar = tqdm(total=cfg.steps, initial=start, desc=f"train {run_name(arm, seed)}", unit="step",
               disable=on_step is not None or not progress)
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_decay)
        for group in optimizer.param_groups:
            group["lr"] = lr
        done = step + 1
        evaluate_now = done % cfg.eval_every == 0 or done == cfg.steps
        log_now = done % cfg.log_every == 0 or evaluate_now
        r = train_step(model, optimizer, losses, source, p, step, log_now, autocast)
        if r.bad is None:
            optimizer.step()
        elif cfg.nonfinite == "stop":
            bar.close()
            logger.close()
            raise NonFiniteLossError(f"step {step}: non-finite {r.bad} (train.nonfinite: stop; "
                                     f"last good checkpoint: {last_path if last_path.exists() else 'none'})")
        else:
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - t0)
        bar.update()
        if on_step is not None:
            on_step(done)

        if log_now:
            row = train_row(r, lr, skipped, losses.monitor.dead_fraction(step))
            timing = {"step_time_ms": 1000 * float(np.mean(step_times)), "wall_time_s": time.perf_counter() - t_start}
            step_times.clear()
            if evaluate_now:
                row.update(validation.row(model, p, autocast))
                if row["val/iou"] > best_iou and _finite_model(model):
                    best_iou = row["val/iou"]
                    save_checkpoint(best_path, state_dict(done))
                row["val/best_iou"] = best_iou
                row.update(validation.curve_row(model, p, autocast))
                bar.set_postfix(val_iou=f"{row['val/iou']:.3f}", val_em=f"{row['val/exact_match']:.3f}")
            logger.log(done, row, timing)
        if (done % cfg.checkpoint_every == 0 or done == cfg.steps) and _finite_model(model):
            save_checkpoint(last_path, state_dict(done))
    bar.close()
    logger.close()
    _write_firing_histogram(metrics_dir / "sae_log_density.csv", losses.monitor)
    rows = logger.rows
    final = {k: v for k, v in rows[-1].items()} if rows else {}
    return {"arm": arm, "seed": seed, "steps": cfg.steps, "best_val_iou": best_iou, "final": final}


def _write_firing_histogram(path: Path, monitor) -> None:
    """Log-density histogram of SAE unit firing rates over the run (log10 rate; never-fired units at -8)."""
    counts, edges = monitor.log_density_histogram(bins=32)
    lines = ["log10_rate_low,log10_rate_high,units"] + [f"{lo:.4f},{hi:.4f},{int(c)}" for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    write_text(path, "\n".join(lines) + "\n")


def _write_config(path: Path, config: dict, arm: str, seed: int) -> None:
    """The resolved config of a run, next to its checkpoints."""
    write_text(path, yaml.safe_dump({"arm": arm, "seed": seed, **config}, sort_keys=False))


__all__ = ["train", "lr_at", "seed_everything"]
