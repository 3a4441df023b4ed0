"""Dose-response of the share loss: collect a ``loss.beta`` sweep from DVC's experiments.

The sweep is queued and run with DVC, e.g.::

    dvc exp run --queue -S loss.beta=0.03,0.1,0.3,1
    dvc queue start
    dvc exp show --json > sweep.json

:func:`collect_sweep` turns the ``dvc exp show --json`` output into one row per experiment
(its ``loss.beta`` and, per hypothesis in its ``metrics/hypotheses.json``, the effect, interval
and verdict); :func:`select_beta` picks the beta with the best *dev* effect (never a test
metric); :func:`dose_response_study` makes a Markdown table and a figure of the effects
against beta.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcl.stats.hypotheses import HYPOTHESES, Hypothesis, by_key
from mcl.studies.result import StudyResult
from mcl.text import fmt

__all__ = ["collect_sweep", "select_beta", "dose_response_study", "plotted_keys", "RESULT_FIELDS"]

METRICS_PATH = "metrics/hypotheses.json"
PARAMS_FILE = "params.yaml"
BETA_PARAM = "loss.beta"
SEEDS_PARAM = "train.seeds"
DEV_KEY = "dev_exact_match"

#: Fields kept per hypothesis in a row's ``results`` (``p``: ``p_holm`` when present, else ``p_value``).
RESULT_FIELDS = ("effect", "ci_low", "ci_high", "p", "verdict", "role", "mde")


def _num(x) -> float | None:
    """``x`` as a finite float, else None (booleans and strings are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _file_data(section: Mapping | None, path: str) -> Mapping | None:
    """``section[path]["data"]`` of an exp show ``params``/``metrics`` block; a key ending in
    ``/path`` also matches (a project in a subdirectory). None when absent or an error."""
    if not isinstance(section, Mapping):
        return None
    block = section.get(path)
    if block is None:
        block = next((v for k, v in section.items() if str(k).endswith("/" + path)), None)
    if not isinstance(block, Mapping) or not isinstance(block.get("data"), Mapping):
        return None
    return block["data"]


def _results(metrics: Mapping | None) -> dict[str, dict[str, Any]]:
    """``key -> {effect, ci_low, ci_high, p, verdict, role, mde}`` from a hypotheses.json payload."""
    out: dict[str, dict[str, Any]] = {}
    for key, e in (metrics or {}).items():
        if not isinstance(e, Mapping) or "effect" not in e:
            continue
        p = _num(e.get("p_holm"))
        out[str(key)] = {
            "effect": _num(e.get("effect")),
            "ci_low": _num(e.get("ci_low")),
            "ci_high": _num(e.get("ci_high")),
            "p": p if p is not None else _num(e.get("p_value")),
            "verdict": e.get("verdict"),
            "role": e.get("role"),
            "mde": _num(e.get("mde")),
        }
    return out


def _iter_experiments(exp_show: list | dict):
    """Yield ``(name, rev, parent, state, data, error)`` for every experiment of an exp show output.

    Two formats: DVC >= 3 (a list of commits, each with ``experiments``: a list of
    ``{"name", "executor", "revs": [{"rev", "name", "data", "error"}, ...]}``, the first rev
    being the experiment's result) and DVC 2 (a dict ``commit -> {"baseline": ..., exp_rev:
    {"data": {..., "name"}}}``). The workspace and the commits themselves are not experiments.
    """
    if isinstance(exp_show, Mapping):
        for parent, revs in exp_show.items():
            if parent == "workspace" or not isinstance(revs, Mapping):
                continue
            for rev, body in revs.items():
                if rev == "baseline" or not isinstance(body, Mapping):
                    continue
                data = body.get("data") or {}
                state = "queued" if data.get("queued") else "running" if data.get("running") else "success"
                yield data.get("name") or str(rev)[:7], str(rev), str(parent), state, data, body.get("error")
        return
    for commit in exp_show or []:
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") or []
            if not revs:
                continue
            head = revs[0]
            state = (exp.get("executor") or {}).get("state") or ("failed" if head.get("error") else "success")
            name = exp.get("name") or head.get("name") or str(head.get("rev", ""))[:7]
            yield (name, str(head.get("rev", "")), str(commit.get("rev", "")), state, head.get("data") or {},
                   head.get("error"))


def collect_sweep(exp_show_json: list | dict, metrics_path: str = METRICS_PATH, params_file: str = PARAMS_FILE,
                  param: str = BETA_PARAM) -> list[dict[str, Any]]:
    """One row per experiment of a ``dvc exp show --json`` output.

    Parameters
    ----------
    exp_show_json : the parsed JSON (DVC 3 list format, or the DVC 2 dict format)
    metrics_path : the hypotheses metrics file inside each experiment
    params_file, param : where the swept parameter is (dotted path inside ``params_file``)

    Returns
    -------
    list of dicts, sorted by ``beta`` (missing last) then name: ``name``, ``rev``, ``parent``
    (the commit the experiment is based on), ``state`` (``success``, ``queued``, ``running``,
    ``failed``, ...), ``error`` (DVC's message or None), ``beta`` (float or None), ``results``
    (``key -> {effect, ci_low, ci_high, p, verdict, role, mde}``; ``p`` is ``p_holm`` when
    present, else ``p_value``; {} when the metrics file is missing or the experiment did not
    succeed), ``n_seeds`` (the length of ``train.seeds``, or None) and ``dev_exact_match``
    (the dev effect, or None).
    """
    rows = []
    for name, rev, parent, state, data, error in _iter_experiments(exp_show_json):
        params = _file_data(data.get("params"), params_file)
        # a queued, running or failed experiment shows its baseline commit's metrics: not its results
        results = _results(_file_data(data.get("metrics"), metrics_path)) if state == "success" else {}
        err = error.get("msg", str(error)) if isinstance(error, Mapping) else error
        rows.append({
            "name": name, "rev": rev, "parent": parent, "state": state, "error": err,
            "beta": _num(_lookup(params, param)),
            "n_seeds": len(seeds) if isinstance(seeds := _lookup(params, SEEDS_PARAM), list) else None,
            "results": results,
            DEV_KEY: (results.get(DEV_KEY) or {}).get("effect"),
        })
    rows.sort(key=lambda r: (r["beta"] is None, r["beta"] if r["beta"] is not None else 0.0, r["name"]))
    return rows


def select_beta(rows: Sequence[Mapping[str, Any]], key: str = DEV_KEY,
                table: Iterable[Hypothesis] = HYPOTHESES) -> float:
    """The beta whose experiment has the best ``key`` effect (``direction * effect`` largest).

    ``key`` must be a hypothesis of ``table`` scored on the dev split: choosing beta on a test
    metric would leak the test set into the model choice (``ValueError``). Ties go to the
    smallest beta; ``beta = 0`` takes part with effect 0 whether or not the sweep ran it (the
    share arm at beta 0 is the baseline bit for bit), so a sweep in which no beta improves dev
    returns 0. Rows without a beta or a finite effect are skipped; ``ValueError`` when none is
    left.
    """
    h = by_key(table).get(key)
    if h is None or h.split != "dev":
        split = h.split if h is not None else "not a registered hypothesis"
        raise ValueError(f"beta is selected on the dev split only; {key!r} is {split}")
    scored = [(h.direction * r["results"][key]["effect"], -r["beta"], r["beta"]) for r in rows
              if r.get("beta") is not None and _num((r.get("results", {}).get(key) or {}).get("effect")) is not None]
    if not scored:
        raise ValueError(f"no experiment has a beta and a finite {key!r} effect")
    if not any(b == 0 for _, _, b in scored):
        scored.append((0.0, -0.0, 0.0))
    return float(max(scored)[2])


def plotted_keys(rows: Sequence[Mapping[str, Any]], table: Iterable[Hypothesis] = HYPOTHESES) -> list[str]:
    """Keys shown by :func:`render_dose_response`: the primaries and the dev metric, in table order,
    that some row has a result for."""
    present = {k for r in rows for k in r.get("results", {})}
    return [h.key for h in table if (h.role == "primary" or h.split == "dev") and h.key in present]


def _markdown(rows: Sequence[Mapping[str, Any]], keys: list[str], hyps: dict[str, Hypothesis],
              selected: float | None) -> str:
    lines = ["# Dose-response: effects against loss.beta", "",
             "Generated by `uv run mcl sweep` (mcl/studies/sweep.py) from the experiments of",
             "`uv run dvc exp run --queue -S loss.beta=0.03,0.1,0.3,1` and `uv run dvc queue start`.",
             "Effects are share - baseline: each experiment retrains the share arm at its beta, and the baseline",
             "arm (beta forced to 0) is the same cached run in all. Intervals and verdicts as in",
             "`metrics/hypotheses.json` of each experiment. Beta is chosen on the dev split only.", ""]
    lines.append(f"Selected beta (best `{DEV_KEY}` effect): **{selected:g}**." if selected is not None
                 else f"Selected beta: none (no experiment has a finite `{DEV_KEY}` effect).")
    if not any(r["beta"] == 0 for r in rows):
        lines += ["", "No beta = 0 experiment: at beta 0 the share arm trains the baseline's weights bit for bit",
                  "(`tests/test_training.py::test_share_arm_at_beta_zero_is_the_baseline`), so every effect is 0."]
    lines += ["", "| experiment | beta | seeds | state |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {fmt(r['beta'], general=True)} | {r.get('n_seeds') or 'n/a'} | {r['state']} |" for r in rows]
    # the compact metrics/hypotheses.json has no p-values: show the column only when some row has one
    with_p = any(e.get("p") is not None for r in rows for e in r["results"].values())
    for key in keys:
        h = hyps.get(key)
        title = f"`{key}` ({h.role}, {h.split}, unit: {h.unit})" if h else f"`{key}`"
        lines += ["", f"## {title}", "", "| beta | experiment | effect | CI |" + (" p |" if with_p else "") + " verdict |",
                  "|---|---|---|---|" + ("---|" if with_p else "") + "---|"]
        for r in rows:
            e = r["results"].get(key)
            if e is None:
                continue
            p = f" {fmt(e['p'], 3, general=True)} |" if with_p else ""
            lines.append(f"| {fmt(r['beta'], general=True)} | {r['name']} | {fmt(e['effect'], general=True)} | "
                         f"[{fmt(e['ci_low'], general=True)}, {fmt(e['ci_high'], general=True)}] |{p} "
                         f"{e['verdict'] or 'n/a'} |")
    return "\n".join(lines) + "\n"


def _figure(rows: Sequence[Mapping[str, Any]], keys: list[str], hyps: dict[str, Hypothesis],
            selected: float | None):
    from mcl.plots import plt  # the Agg backend

    n = max(1, len(keys))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    positive = [r["beta"] for r in rows if r["beta"] is not None and r["beta"] > 0]
    for ax, key in zip(axes.ravel(), keys):
        pts = [(r["beta"], r["results"][key]) for r in rows
               if r["beta"] is not None and key in r["results"] and r["results"][key]["effect"] is not None]
        xs = [b for b, _ in pts]
        ys = [e["effect"] for _, e in pts]
        lo = [e["effect"] - e["ci_low"] if e["ci_low"] is not None else 0.0 for _, e in pts]
        hi = [e["ci_high"] - e["effect"] if e["ci_high"] is not None else 0.0 for _, e in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, ms=4)
        ax.axhline(0.0, color="k", lw=0.8)
        h = hyps.get(key)
        if h is not None and not h.delta_scale:
            for s in (-1, 1):
                ax.axhline(s * h.delta, color="grey", lw=0.8, ls="--")
        if selected is not None:
            ax.axvline(selected, color="tab:red", lw=0.8, ls=":")
        if positive:
            ax.set_xscale("symlog", linthresh=min(positive))
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.margins(x=0.08)
        ax.set_xlabel("loss.beta")
        ax.set_ylabel("share - baseline", fontsize=8)
        ax.set_title(f"{key}" + (f" ({h.role}, {h.split})\n{h.unit}" if h else ""), fontsize=8)
    for ax in axes.ravel()[len(keys):]:
        ax.set_axis_off()
    fig.suptitle("Effect against loss.beta (bars: intervals; dashed: +-delta; dotted: selected beta)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def dose_response_study(rows: Sequence[Mapping[str, Any]], figure: Path,
                        table: Iterable[Hypothesis] = HYPOTHESES) -> StudyResult:
    """The dose-response page (Markdown table) and its figure (to be saved as ``figure``) of a collected sweep.

    Parameters
    ----------
    rows : :func:`collect_sweep` output
    figure : where the CLI saves the figure
    table : the hypotheses (roles, splits, units and deltas for labels and reference lines)

    Returns
    -------
    :class:`StudyResult` whose data is a dict ``selected_beta`` (:func:`select_beta`, or None when no
    dev effect is available) and ``keys`` (the hypotheses shown: the primaries -- manipulation check
    and test -- and the dev metric, each against beta with its interval).
    """
    table = tuple(table)
    hyps = by_key(table)
    keys = plotted_keys(rows, table)
    try:
        selected = select_beta(rows, DEV_KEY, table)
    except ValueError:
        selected = None
    return StudyResult(_markdown(rows, keys, hyps, selected), {"selected_beta": selected, "keys": keys},
                       {Path(figure): _figure(rows, keys, hyps, selected)})
