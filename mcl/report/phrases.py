"""Phrases both documents use: intervals, p-values, per-seed values and one sentence per hypothesis."""

from __future__ import annotations

from mcl.analysis.run import H2_UNTESTABLE
from mcl.config import ARMS
from mcl.text import fmt

#: How the documents say they were generated.
REPORT_CMD = "`uv run dvc repro` (stage `report`, i.e. `uv run mcl report`)"
#: The H2 precondition's outcome when adaptation does not measurably help the baseline.
H2_UNTESTABLE_CLAIM = f"H2 is {H2_UNTESTABLE}"
#: Order of the hypothesis roles in the tables.
ROLE_ORDER = {"primary": 0, "secondary": 1, "exploratory": 2}


def ci_text(lo, hi, signed: bool = True) -> str:
    """``[lo, hi]``, or 'n/a' when either end is missing."""
    return "n/a" if lo is None or hi is None else f"[{fmt(lo, signed=signed)}, {fmt(hi, signed=signed)}]"


def p_text(e: dict) -> str:
    """The p-value of hypothesis entry ``e``: Holm-adjusted for a primary, raw otherwise."""
    if e.get("role") == "primary":
        return f"Holm p {fmt(e.get('p_holm'))}"
    return f"p {fmt(e.get('p_value'))}"


def h2_testable(art: dict) -> bool:
    """Whether analysis.json's H2 precondition holds (adaptation measurably helps the baseline)."""
    return bool((art.get("h2_precondition") or {}).get("testable"))


def arm_mean(art: dict, arm: str, key: str):
    """Mean over seeds of ``key`` for ``arm`` in analysis.json's summary (None when absent)."""
    return (art["summary"][arm].get(key) or {}).get("mean")


def mean_ci_text(art: dict, arm: str, key: str, digits: int = 4) -> str:
    """Mean over seeds of ``key`` for ``arm`` with its interval over seeds, where there is one."""
    s = art["summary"][arm].get(key) or {}
    ci = "" if s.get("ci_low") is None or s.get("ci_high") is None else \
        f" [{fmt(s['ci_low'], digits)}, {fmt(s['ci_high'], digits)}]"
    return f"{fmt(s.get('mean'), digits)}{ci}"


def per_seed_text(art: dict, key: str, digits: int = 4) -> str:
    """The per-seed values of ``key``, one group per arm."""
    return "; ".join(f"{arm} " + ", ".join(fmt(v, digits) for v in art["per_seed"][arm].get(key, [])) for arm in ARMS)


def ordered_keys(hyp: dict) -> list[str]:
    """Hypothesis keys, primaries first, then secondaries and exploratory ones (table order within a role)."""
    keys = [k for k, v in hyp.items() if isinstance(v, dict)]
    return sorted(keys, key=lambda k: (ROLE_ORDER.get(hyp[k].get("role"), 3), keys.index(k)))


def verdict_cell(key: str, e: dict, decided: dict, art: dict) -> str:
    """The verdict column of the hypothesis table (H2 withheld when its precondition fails)."""
    if decided.get(key, {}).get("family") == "H2" and not h2_testable(art):
        return f"**{H2_UNTESTABLE}** (computed: {decided[key].get('verdict')})"
    v = f"**{e.get('verdict')}**"
    if decided.get(key, {}).get("trivial"):
        v += " (trivial: inside +-delta)"
    return v


def hypothesis_sentence(key: str, e: dict, f: dict, art: dict) -> str:
    """One hypothesis in a sentence: effect, interval, p, MDE against delta, sample, verdict.

    Parameters
    ----------
    key : str
        The hypothesis key.
    e, f : dict
        Its entry in the merged hypotheses and its decided entry in analysis.json.
    art : dict
        analysis.json (the H2 precondition and why an entry was not computed).
    """
    if e.get("effect") is None:
        reason = (art.get("entries_method") or {}).get(key) or "no usable statistics"
        return f"`{key}` ({e.get('role')}): not computed ({reason}); verdict **{e.get('verdict')}**."
    verdict = H2_UNTESTABLE if f.get("family") == "H2" and not h2_testable(art) else e.get("verdict")
    n = (f"{f.get('n_seeds', 'n/a')} seeds" if f.get("design") == "seeds" else
         f"{f.get('n_seeds', 'n/a')} seeds x {f.get('n_items', 'n/a')} items in {f.get('n_groups', 'n/a')} groups")
    return (f"`{key}` ({e.get('role')}; {f.get('claim', '')}): share - baseline = {fmt(e['effect'], signed=True)} "
            f"(share {fmt(f.get('share_mean'))} vs baseline {fmt(f.get('baseline_mean'))}; 95% CI "
            f"{ci_text(e.get('ci_low'), e.get('ci_high'))}; {p_text(e)}; MDE {fmt(e.get('mde'))} vs delta "
            f"{fmt(f.get('delta'))}; {n}), so: **{verdict}**.")
