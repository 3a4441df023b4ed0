"""`mcl bench train` and `mcl bench share`: training throughput and the share loss's cost, side by side.

Neither needs the pipeline's store: batches come from the generator in memory, and the
training benchmarks write a store of ``params.data`` into a temporary folder.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mcl.config import Params
from mcl.data.dataset import DeviceSplit, GroupedBatchSampler, OnlineSource
from mcl.bench.share import bench_share
from mcl.losses.share import share_loss
from mcl.models.build import build_model, resolve_device
from mcl.training.trainer import train


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fixed_batch(params: Params, device) -> dict[str, torch.Tensor]:
    """One grouped batch of fresh train-type episodes from the generator (no store needed)."""
    split = DeviceSplit(OnlineSource(params.data).buffer(0), device)
    sampler = GroupedBatchSampler(split.label_sets, params.train.groups, params.train.group_size, seed=0)
    return split.batch(sampler.batch(0))


def bare_step_ms(params: Params, device, steps: int) -> float:
    """Median ms of a bare forward / cross-entropy / backward / AdamW step on one pre-built batch
    (with the co-training pass on ``train.cotrain_episodes`` when the model has one)."""
    torch.manual_seed(0)
    model = build_model(params, device)
    opt = torch.optim.AdamW(model.parameters(), lr=params.train.lr)
    b = _fixed_batch(params, device)
    target = b["outputs"][:, -1].long()
    cotrain = model.cotrain_episodes(params.train.cotrain_episodes)
    times = []
    for i in range(steps + 3):
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(b["inputs"], b["outputs"], b["program"], b["args"], cotrain=cotrain)
        loss = torch.nn.functional.cross_entropy(out.logits, target)
        if cotrain:
            loss = loss + torch.nn.functional.cross_entropy(out.cotrain_logits, target[:cotrain])
        loss.backward()
        opt.step()
        _sync(device)
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _with_temp_store(params: Params, tmp: Path) -> Params:
    """``params`` with ``data.store`` replaced by a freshly generated store under ``tmp``."""
    from mcl.data.store import generate_store

    path = tmp / ("episodes.zarr" if params.data.format == "zarr" else "episodes.h5")
    return dataclasses.replace(params, data=generate_store(params.data, path))


def previous_model(params: Params) -> Params:
    """``params`` with the model before the routing executor: patch tokens per pair, the FiLM transformer
    executor, no co-training."""
    return dataclasses.replace(params, model=dataclasses.replace(params.model, demo_embed="patch", executor="transformer"),
                               loss=dataclasses.replace(params.loss, cotrain=0.0))


def bench_train(params: Params, steps: int = 200) -> list[str]:
    """Episodes/s of the real training loop vs a bare step of the same model, and the bare step of the
    previous model, same run."""
    device = resolve_device(params.train.device)
    batch = params.train.batch_size * params.train.grad_accum
    torch.set_num_threads(params.train.threads)
    bare = bare_step_ms(params, device, steps)
    previous = bare_step_ms(previous_model(params), device, steps)
    p = dataclasses.replace(params, train=dataclasses.replace(params.train, steps=steps, device=str(device.type)))
    with tempfile.TemporaryDirectory() as tmp:
        p = _with_temp_store(p, Path(tmp))
        t0 = time.perf_counter()
        train(p, "share", 0, Path(tmp) / "run", Path(tmp) / "metrics", progress=False)
        wall = time.perf_counter() - t0
    # the full run includes start-up (loading the split, building the model) and the val evaluations
    pipeline_ms = 1e3 * wall / steps
    return [
        f"device {device}, batch {batch} episodes, {steps} steps, torch threads {torch.get_num_threads()}",
        f"bare forward/backward/step on a pre-built batch: {bare:.1f} ms/step = {1e3 * batch / bare:,.0f} episodes/s",
        f"mcl train (sampler, all losses incl. share + SAE, logging, val every {params.train.eval_every} steps, "
        f"checkpoints, start-up): {pipeline_ms:.1f} ms/step = {1e3 * batch / pipeline_ms:,.0f} episodes/s",
        f"pipeline overhead: {100 * (pipeline_ms / bare - 1):.0f}% over the bare step (target <= 25%)",
        f"previous model (patch tokens, transformer executor, no co-training), bare step: {previous:.1f} ms/step; "
        f"default / previous: {bare / previous:.2f}",
    ]


def bench_share_cost(params: Params, repeats: int = 20) -> list[str]:
    """Share loss forward+backward vs the naive d x d formulation, and vs a full training step."""
    device = resolve_device(params.train.device)
    k = params.loss.share.k
    rows = bench_share(params.model.h_dim, params.train.groups, params.train.group_size, k, str(device), repeats=5)
    lines = [f"device {device}, k = {k}, forward + backward, median of 5"]
    for r in rows:
        lines.append(f"G={r['G']:>3} m={r['m']:>3} d={r['d']:>4}: Gram route {r['fast_ms']:8.2f} ms, "
                     f"naive d x d projectors {r['naive_ms']:9.2f} ms, ratio {r['ratio']:.1f}x")
    # the share loss on the default batch's real h, against a full training step
    torch.manual_seed(0)
    model = build_model(params, device)
    b = _fixed_batch(params, device)
    with torch.no_grad():
        h_real = model(b["inputs"], b["outputs"]).h
    times = []
    for i in range(repeats + 3):
        h = h_real.clone().requires_grad_(True)
        _sync(device)
        t0 = time.perf_counter()
        loss, _ = share_loss(h, b["labels"], params.train.groups, k, params.loss.share.eps)
        loss.backward()
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    share_ms = 1e3 * statistics.median(times)
    step_ms = bare_step_ms(params, device, repeats)
    lines.append(f"default batch (G={params.train.groups}, m={params.train.group_size}, d={params.model.h_dim}): share loss "
                 f"{share_ms:.2f} ms vs a training step {step_ms:.1f} ms = {100 * share_ms / step_ms:.1f}% (target <= 10%)")
    return lines


def bench_parallel(params: Params, seeds: int = 2, steps: int = 1000, workers: int | None = None) -> list[str]:
    """Wall time of training ``seeds`` seeds one after another, then side by side, in one run.

    Both use :func:`mcl.training.pool.train_seeds` on the same temporary store with
    ``steps`` steps of the share arm; the side-by-side run uses ``workers`` processes (default
    :func:`~mcl.training.pool.pool_workers`). Also checks that every seed's final weights are
    the same bytes in both runs.
    """
    from mcl.studies.reproducibility import weights_digest
    from mcl.models.checkpoint import load_checkpoint
    from mcl.training.pool import pool_workers, train_seeds

    p = dataclasses.replace(params, train=dataclasses.replace(
        params.train, steps=steps, eval_every=steps, checkpoint_every=steps, device="cpu"))
    seed_list = list(range(seeds))
    n = workers or pool_workers(p.train.workers, p.train.threads, seeds)
    walls, digests = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        p = _with_temp_store(p, tmp)
        for label, w in (("serial", 1), ("parallel", n)):
            t0 = time.perf_counter()
            train_seeds(p, {"share": seed_list}, tmp / label / "models", tmp / label / "metrics", workers=w,
                        tensorboard=False, progress=False)
            walls[label] = time.perf_counter() - t0
            digests[label] = [weights_digest(load_checkpoint(tmp / label / "models" / "share" / f"seed{s}" / "last.pt")["model"])
                              for s in seed_list]
    same = digests["serial"] == digests["parallel"]
    return [
        f"{seeds} seeds x {steps} steps of the share arm, CPU, {p.train.threads} torch thread(s) per process",
        f"one after another: {walls['serial']:.2f} s",
        f"side by side ({n} processes): {walls['parallel']:.2f} s",
        f"ratio side by side / one after another: {walls['parallel'] / walls['serial']:.2f} (target <= 0.6 for 2 seeds on 2 cores)",
        f"final weights identical per seed: {'yes' if same else 'NO'}",
    ]
