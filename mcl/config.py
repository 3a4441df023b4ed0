"""Typed mirror of ``params.yaml``: one frozen dataclass per section.

``params.yaml`` holds the values; these dataclasses hold the schema (types, ranges,
choices). :func:`load_params` checks every key and raises :class:`ConfigError` with
a one-line message naming the key path, e.g.
``params.yaml: data.demos must be an integer >= 1, got 'three'``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml


class ConfigError(ValueError):
    """A bad value in params.yaml; the message names the key path."""


def spec(*, ge=None, gt=None, le=None, lt=None, choices=None):
    """Dataclass field carrying validation constraints (no default: params.yaml is the source)."""
    return field(metadata=dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices))


@dataclass(frozen=True)
class DataConfig:
    seed: int = spec(ge=0)
    format: str = spec(choices=("zarr", "hdf5"))
    store: str = spec()
    demos: int = spec(ge=1, le=16)
    min_shapes: int = spec(ge=1, le=16)
    max_shapes: int = spec(ge=1, le=16)
    max_shape_size: int = spec(ge=1, le=8)
    sprite_prob: float = spec(ge=0.0, le=1.0)
    palette: int = spec(ge=2, le=9)
    n_train: int = spec(ge=1)
    n_val: int = spec(ge=1)
    n_test: int = spec(ge=1)
    n_fewshot: int = spec(ge=1)
    n_dev: int = spec(ge=1)                  # length-3 dev split, label sets disjoint from test and fewshot
    novel2_fraction: float = spec(ge=0.0, lt=1.0)  # length-2 label sets held out of train as novel2
    n_novel2: int = spec(ge=1)
    probe_programs: int = spec(ge=2)
    probe_episodes: int = spec(ge=1)
    source: str = spec(choices=("frozen", "online"))
    online_buffer: int = spec(ge=1)


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = spec(choices=("transformer", "gru", "oracle"))
    demo_embed: str = spec(choices=("correspondence", "patch"))
    executor: str = spec(choices=("routing", "transformer"))
    executor_steps: int = spec(ge=1, le=6)
    d_model: int = spec(ge=4)
    n_layers: int = spec(ge=1)
    n_heads: int = spec(ge=1)
    patch: int = spec(choices=(1, 2, 4, 8))
    h_dim: int = spec(ge=2)
    sae_dim: int = spec(ge=1)
    sae_kind: str = spec(choices=("l1", "topk"))
    sae_topk: int = spec(ge=1)
    decode_from: str = spec(choices=("h", "h_hat"))
    aux_from: str = spec(choices=("h", "z"))
    executor_layers: int = spec(ge=1)
    dropout: float = spec(ge=0.0, lt=1.0)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = spec(choices=("constant", "linear_warmup", "cosine"))
    start: int = spec(ge=0)
    end: int = spec(ge=0)


@dataclass(frozen=True)
class SchedulesConfig:
    alpha: ScheduleConfig = spec()
    beta: ScheduleConfig = spec()
    gamma: ScheduleConfig = spec()


@dataclass(frozen=True)
class ShareConfig:
    k: int = spec(ge=1)
    detach: bool = spec()
    ema: float = spec(ge=0.0, lt=1.0)
    repel: float = spec(ge=0.0)
    eps: float = spec(gt=0.0, lt=1.0)
    objective: str = spec(choices=("match", "attract"))


@dataclass(frozen=True)
class SaeLossConfig:
    l1: float = spec(ge=0.0)
    target_active: float = spec(gt=0.0, lt=1.0)
    controller_rate: float = spec(ge=0.0, lt=1.0)
    dead_window: int = spec(ge=1)
    detach: bool = spec()


@dataclass(frozen=True)
class LossConfig:
    task: str = spec(choices=("ce", "iou"))
    cotrain: float = spec(ge=0.0)
    alpha: float = spec(ge=0.0)
    beta: float = spec(ge=0.0)
    gamma: float = spec(ge=0.0)
    schedule: SchedulesConfig = spec()
    share: ShareConfig = spec()
    sae: SaeLossConfig = spec()


@dataclass(frozen=True)
class TrainConfig:
    seeds: list[int] = spec(ge=0)
    oracle_seeds: list[int] = spec(ge=0)
    device: str = spec(choices=("auto", "cpu", "cuda"))
    steps: int = spec(ge=1)
    groups: int = spec(ge=1)
    group_size: int = spec(ge=1)
    lr: float = spec(gt=0.0)
    weight_decay: float = spec(ge=0.0)
    warmup_steps: int = spec(ge=0)
    lr_decay: float = spec(gt=0.0, le=1.0)
    cotrain_episodes: int = spec(ge=1)
    grad_clip: float = spec(ge=0.0)
    grad_accum: int = spec(ge=1)
    log_every: int = spec(ge=1)
    eval_every: int = spec(ge=1)
    checkpoint_every: int = spec(ge=1)
    val_episodes: int = spec(ge=1)
    nonfinite: str = spec(choices=("stop", "skip"))
    sampler: str = spec(choices=("grouped", "random"))
    threads: int = spec(ge=1)
    workers: int = spec(ge=0)

    @property
    def batch_size(self) -> int:
        return self.groups * self.group_size


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = spec(ge=1)


@dataclass(frozen=True)
class FinetuneConfig:
    method: str = spec(choices=("lora", "adapter"))
    num_tasks: int = spec(ge=1)
    shots: int = spec(ge=1)
    queries: int = spec(ge=1)
    steps: int = spec(ge=1)
    eval_every: int = spec(ge=1)
    lr: float = spec(gt=0.0)
    threshold: float = spec(gt=0.0, le=1.0)
    gap_fraction: float = spec(gt=0.0, lt=1.0)
    rank: int = spec(ge=1)
    lora_alpha: float = spec(gt=0.0)
    adapter_dim: int = spec(ge=1)


@dataclass(frozen=True)
class AnalysisConfig:
    probe_train_episodes: int = spec(ge=1)   # train episodes (first N) the linear probes fit on, plus val
    probe_max_iter: int = spec(ge=1)         # L-BFGS-B iteration limit per linear probe
    batch_size: int = spec(ge=1)             # forward-pass batch for representations
    subspace_k: int = spec(ge=1)             # PCA directions per task for the subspace similarity
    alpha: float = spec(gt=0.0, lt=1.0)      # intervals are central 1 - alpha
    top_units: int = spec(ge=1)              # most selective SAE units shown with examples
    top_examples: int = spec(ge=1)           # top-activating test episodes per shown unit


@dataclass(frozen=True)
class Params:
    data: DataConfig = spec()
    model: ModelConfig = spec()
    loss: LossConfig = spec()
    train: TrainConfig = spec()
    eval: EvalConfig = spec()
    finetune: FinetuneConfig = spec()
    analysis: AnalysisConfig = spec()


# ---------------------------------------------------------------------------
# parsing

_TYPE_WORDS = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}


def _describe(tp, meta) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    word = _TYPE_WORDS[tp]
    bounds = [f"{op} {meta[key]}" for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if meta.get(key) is not None]
    return " ".join([word, " and ".join(bounds)]).strip()


def _scalar(value, tp, meta, path: str, source: str):
    fail = ConfigError(f"{source}: {path} must be {_describe(tp, meta)}, got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise fail
        return value
    if isinstance(value, bool):
        raise fail
    if tp is int:
        if not isinstance(value, int):
            raise fail
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                value = float(value)
            except ValueError:
                raise fail from None
        if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
            raise fail
        value = float(value)
    elif tp is str and not isinstance(value, str):
        raise fail
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise fail
    for key, ok in (("ge", lambda a, b: a >= b), ("gt", lambda a, b: a > b), ("le", lambda a, b: a <= b), ("lt", lambda a, b: a < b)):
        if meta.get(key) is not None and not ok(value, meta[key]):
            raise fail
    return value


def _build(cls, raw, path: str, source: str):
    where = path or "top level"
    known = {f.name: f for f in fields(cls)}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping with keys {', '.join(known)}, got {raw!r}")
    for key in raw:
        if key not in known:
            full = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{source}: unknown key {full} (allowed in {where}: {', '.join(known)})")
    values = {}
    hints = {f.name: f.type for f in fields(cls)}
    for name, f in known.items():
        full = f"{path}.{name}" if path else name
        if name not in raw:
            raise ConfigError(f"{source}: missing key {full}")
        tp = _resolve(hints[name])
        value = raw[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, full, source)
        elif tp == list[int]:
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{source}: {full} must be a non-empty list of integers, got {value!r}")
            values[name] = [_scalar(v, int, f.metadata, f"{full}[{i}]", source) for i, v in enumerate(value)]
        else:
            values[name] = _scalar(value, tp, f.metadata, full, source)
    return cls(**values)


_TYPES = {c.__name__: c for c in (DataConfig, ModelConfig, ScheduleConfig, SchedulesConfig, ShareConfig,
                                    SaeLossConfig, LossConfig, TrainConfig, EvalConfig, FinetuneConfig,
                                    AnalysisConfig)}
_TYPES.update(int=int, float=float, bool=bool, str=str)


def _resolve(annotation):
    if isinstance(annotation, str):
        if annotation == "list[int]":
            return list[int]
        return _TYPES[annotation]
    return annotation


def _check_consistency(p: Params, source: str) -> None:
    """Cross-key rules: contradictions between otherwise valid values."""
    def fail(msg):
        raise ConfigError(f"{source}: {msg}")

    suffix = {"zarr": ".zarr", "hdf5": ".h5"}[p.data.format]
    if not p.data.store.endswith(suffix):
        fail(f"data.store must end with {suffix} when data.format is {p.data.format}, got {p.data.store!r}")
    if p.data.min_shapes > p.data.max_shapes:
        fail(f"data.min_shapes must be <= data.max_shapes ({p.data.max_shapes}), got {p.data.min_shapes}")
    if p.model.d_model % p.model.n_heads:
        fail(f"model.d_model must be divisible by model.n_heads ({p.model.n_heads}), got {p.model.d_model}")
    if p.model.executor == "routing" and p.model.h_dim % p.model.executor_steps:
        fail(f"model.h_dim must be divisible by model.executor_steps ({p.model.executor_steps}) for the routing "
             f"executor, got {p.model.h_dim}")
    if (p.model.encoder == "oracle" or p.loss.cotrain > 0) and p.model.h_dim % 3:
        fail(f"model.h_dim must be divisible by 3 (one slot per program step) for the program encoder "
             f"(model.encoder oracle or loss.cotrain > 0), got {p.model.h_dim}")
    if p.model.sae_topk > p.model.sae_dim:
        fail(f"model.sae_topk must be <= model.sae_dim ({p.model.sae_dim}), got {p.model.sae_topk}")
    if p.loss.sae.detach and p.model.decode_from == "h_hat":
        fail("loss.sae.detach must be false when model.decode_from is h_hat (the executor's gradient would not reach the encoder)")
    if p.loss.share.k >= p.train.group_size:
        fail(f"loss.share.k must be < train.group_size ({p.train.group_size}) so each group spans k directions, got {p.loss.share.k}")
    if p.loss.share.k > p.model.h_dim:
        fail(f"loss.share.k must be <= model.h_dim ({p.model.h_dim}), got {p.loss.share.k}")
    for name in ("alpha", "beta", "gamma"):
        s = getattr(p.loss.schedule, name)
        if s.kind != "constant" and s.end <= s.start:
            fail(f"loss.schedule.{name}.end must be > start ({s.start}) for kind {s.kind}, got {s.end}")
    if p.train.cotrain_episodes > p.train.batch_size:
        fail(f"train.cotrain_episodes must be <= the batch (train.groups x train.group_size = {p.train.batch_size}), "
             f"got {p.train.cotrain_episodes}")
    for key in ("seeds", "oracle_seeds"):
        seeds = getattr(p.train, key)
        if len(set(seeds)) != len(seeds):
            fail(f"train.{key} must not repeat a seed, got {seeds}")
    if p.finetune.eval_every > p.finetune.steps:
        fail(f"finetune.eval_every must be <= finetune.steps ({p.finetune.steps}), got {p.finetune.eval_every}")


def set_path(raw: dict, dotted: str, value: Any) -> None:
    """Set ``raw['a']['b'] = value`` for ``dotted='a.b'`` (creating nothing: the path must exist)."""
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"override: unknown key {dotted}")
        node = node[key]
    if not isinstance(node, dict) or leaf not in node:
        raise ConfigError(f"override: unknown key {dotted}")
    node[leaf] = value


def parse_params(raw: Any, source: str = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Params:
    """Validate a raw mapping (as read from YAML) into :class:`Params`."""
    raw = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        set_path(raw, dotted, value)
    params = _build(Params, raw, "", source)
    _check_consistency(params, source)
    return params


def load_raw(path: str | os.PathLike = "params.yaml") -> Any:
    """``params.yaml`` as read from YAML (duplicate keys refused), not yet validated."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    return _read_yaml(text, path.name)


def load_params(path: str | os.PathLike = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` maps dotted keys to replacement values."""
    return parse_params(load_raw(path), Path(path).name, overrides)


def _yaml_error(e: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: where it is and what the parser expected."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or not problem:
        return f"not valid YAML ({str(e).splitlines()[0]})"
    text = f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {' '.join(problem.split())}"
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context:
        text += f" ({' '.join(context.split())}" + (f" started at line {cmark.line + 1})" if cmark else ")")
    return text


def _check_duplicate_keys(node, path: str, source: str, seen_nodes: set) -> None:
    """Refuse a key that appears twice in one mapping (plain YAML silently keeps the last one)."""
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            full = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"{source}: duplicate key {full} (lines {lines[key]} and {line}); "
                                  f"each key may appear once")
            lines[key] = line
            _check_duplicate_keys(value_node, full, source, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{path}[{i}]", source, seen_nodes)


def _read_yaml(text: str, source: str):
    """``yaml.safe_load`` that also refuses duplicate keys; errors are one-line :class:`ConfigError`."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_duplicate_keys(node, "", source, set())
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: {_yaml_error(e)}") from None


def to_dict(obj) -> dict:
    """Params (or a section) as plain nested dicts, for config.yaml and store attributes."""
    return dataclasses.asdict(obj)


# The two arms of every comparison and the name of one training run (its folder under models/).
ARMS = ("share", "baseline")
# Control runs trained beside the arms: the oracle-task executor (the true program as its task vector).
CONTROLS = ("oracle",)


def run_name(arm: str, seed: int) -> str:
    """A run's relative path under models/, metrics/train/, metrics/eval/ ...: ``<arm>/seed<k>``."""
    return f"{arm}/seed{seed}"


def arm_params(params: Params, arm: str) -> Params:
    """The params an arm trains with: ``share`` as given, ``baseline`` with ``loss.beta`` forced to 0,
    ``oracle`` (the oracle-task control) as the baseline with the true program as its task vector."""
    if arm not in ARMS + CONTROLS:
        raise ValueError(f"unknown arm {arm!r} (expected one of {', '.join(ARMS + CONTROLS)})")
    if arm == "share":
        return params
    p = dataclasses.replace(params, loss=dataclasses.replace(params.loss, beta=0.0))
    if arm == "oracle":
        p = dataclasses.replace(p, model=dataclasses.replace(p.model, encoder="oracle"))
    return p
