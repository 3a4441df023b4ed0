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
    if cfg.sampler == "random" and p.loss.beta > 0:
        raise ConfigError("train.sampler random leaves no label-set groups for the share loss: "
                         "use it with loss.beta 0 (the baseline or oracle arm)")
    device = resolve_device(cfg.device)
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
    torch.set_num_threads(cfg.threads)  # fixed, so a run gives the same bytes alone or in a pool
    seed_everything(seed)

    store = open_store(p.data.store)
    val_eps = store.load("val")
    val = DeviceSplit(val_eps, device)
    val_index = np.arange(min(cfg.val_episodes, len(val)))
    alone = primitive_alone_masks(val_eps.take(val_index))  # per-primitive learning curves
    curve_splits = {name: DeviceSplit(store.load(name), device) for name in curves}
    online = OnlineSource(p.data, exclude=val_eps) if p.data.source == "online" else None
    train_split = None if online else DeviceSplit(store.load("train"), device)

    model = build_model(p, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = LossManager(p.loss, p.model.h_dim, p.model.sae_dim, l1_control=p.model.sae_kind == "l1", seed=seed)
    config = to_dict(p)

    start, best_iou, skipped = 0, -1.0, 0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resume and not last_path.exists():
        print(f"--resume: no checkpoint at {last_path}; training from step 0", file=sys.stderr)
    if resume and last_path.exists():
        state = load_checkpoint(last_path, config["model"], map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        losses.load_state_dict(state["loss_manager"])
        torch.set_rng_state(state["rng"])
        start, best_iou, skipped = int(state["step"]), float(state["best_val_iou"]), int(state["skipped"])
    _write_config(run_dir / "config.yaml", config, arm, seed)
    logger = RunLogger(metrics_dir, run_dir / "tb" if tensorboard else None, resume_step=start if start else None)

    def state_dict(step: int) -> dict:
        return {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loss_manager": losses.state_dict(), "rng": torch.get_rng_state(), "best_val_iou": best_iou,
                "skipped": skipped, "config": config, "arm": arm, "seed": seed}

    sampler_seed = seed * 1_000_003 + 17
    make_sampler = (RandomBatchSampler if cfg.sampler == "random" else GroupedBatchSampler)
    sampler = buffer_round = None
    steps_per_buffer = max(1, p.data.online_buffer // cfg.batch_size)
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
        optimizer.zero_grad(set_to_none=True)
        comps_sum: dict[str, float] = {}
        train_metrics: dict[str, list] = {}
        manip: dict[str, float] = {}
        done = step + 1
        log_now = done % cfg.log_every == 0 or done % cfg.eval_every == 0 or done == cfg.steps
        finite = True
        for micro in range(cfg.grad_accum):
            draw = step * cfg.grad_accum + micro
            if online is not None:
                if buffer_round != draw // steps_per_buffer:
                    buffer_round = draw // steps_per_buffer
                    train_split = DeviceSplit(online.buffer(buffer_round), device)
                    sampler = make_sampler(train_split.label_sets, cfg.groups, cfg.group_size, sampler_seed + buffer_round)
            elif sampler is None:
                sampler = make_sampler(train_split.label_sets, cfg.groups, cfg.group_size, sampler_seed)
            b = train_split.batch(sampler.batch(draw))
            target = b["outputs"][:, -1].long()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(b["inputs"], b["outputs"], b["program"], b["args"], detach_sae=p.loss.sae.detach)
                few = slice(0, cfg.cotrain_episodes)  # the executor also applies the true program to these
                cotrain = (model.execute_program(b["inputs"][few, -1], b["program"][few], b["args"][few]).float()
                           if model.program_encoder is not None else None)
            total, comps = losses(out.logits.float(), target, out.h.float(), out.z.float(), out.h_hat.float(),
                                  out.aux_logits.float(), b["labels"], cfg.groups, step,
                                  update=micro == cfg.grad_accum - 1,  # controller/monitor/bank step once per step
                                  cotrain_logits=cotrain)
            bad = [k for k in ("task", "cotrain", "aux", "share", "sae", "loss") if not math.isfinite(comps.get(k, 0.0))]
            if bad:
                finite = False
                break
            (total / cfg.grad_accum).backward()
            for k, v in comps.items():
                comps_sum[k] = comps_sum.get(k, 0.0) + v / cfg.grad_accum
            if log_now:
                for k, v in per_episode(out.logits.detach().argmax(dim=1), target).items():
                    train_metrics.setdefault(k, []).append(v)
                # manipulation check, in both arms (no gradient): did the share loss shape h?
                manip = manipulation_metrics(out.h.float(), b["labels"], cfg.groups, p.loss.share.k, p.loss.share.eps)
        if finite:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
            if not math.isfinite(grad_norm):
                finite, bad = False, ["gradient"]
        if not finite:
            if cfg.nonfinite == "stop":
                bar.close()
                logger.close()
                raise NonFiniteLossError(f"step {step}: non-finite {bad[0]} (train.nonfinite: stop; "
                                         f"last good checkpoint: {last_path if last_path.exists() else 'none'})")
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
        else:
            optimizer.step()
        step_times.append(time.perf_counter() - t0)
        bar.update()
        if on_step is not None:
            on_step(done)

        if log_now:
            row = {f"train/{k}": v for k, v in comps_sum.items()}
            row.update({f"train/{k}": v for k, v in summarise({k: torch.cat(v) for k, v in train_metrics.items()}).items()
                        if k != "episodes"} if train_metrics else {})
            row.update({"lr": lr, "skipped_steps": skipped, "grad_norm": grad_norm if finite else float("nan")})
            timing = {"step_time_ms": 1000 * float(np.mean(step_times)), "wall_time_s": time.perf_counter() - t_start}
            step_times.clear()
            row["train/sae_dead_fraction"] = losses.monitor.dead_fraction(step)
            row.update({f"manip/{k}": v for k, v in manip.items()})
            if done % cfg.eval_every == 0 or done == cfg.steps:
                values = evaluate_split(model, val, val_index, p.eval.batch_size, autocast)
                vm = summarise(values)
                row.update({f"val_alone/{name}": summarise(values, mask)["exact_match"] for name, mask in alone.items()})
                row.update({f"val/{k}": v for k, v in vm.items() if k != "episodes"})
                if vm["iou"] > best_iou and _finite_model(model):
                    best_iou = vm["iou"]
                    save_checkpoint(best_path, state_dict(done))
                row["val/best_iou"] = best_iou
                for name, split in curve_splits.items():
                    cm = summarise(evaluate_split(model, split, np.arange(min(cfg.val_episodes, len(split))),
                                                  p.eval.batch_size, autocast))
                    row.update({f"{name}/{k}": v for k, v in cm.items() if k != "episodes"})
                bar.set_postfix(val_iou=f"{vm['iou']:.3f}", val_em=f"{vm['exact_match']:.3f}")
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
