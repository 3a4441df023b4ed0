"""The `mcl report` stage: writes docs/hypotheses.md, docs/results_summary.md, docs/analysis_report.md and figures."""

from __future__ import annotations

from pathlib import Path

from mcl.analysis.run import analysis_constants_markdown
from mcl.config import Params
from mcl.io import write_text
from mcl.report.analysis_page import analysis_report
from mcl.report.artifacts import load_artifacts
from mcl.report.experiment_log import experiment_log_section
from mcl.report.figures import FIGURE_DIR, FIGURES, write_example_figures, write_figures
from mcl.report.summary_page import results_summary
from mcl.stats.hypotheses import HYPOTHESES, render_preregistration


def write_preregistration(path: Path, table=None, alpha: float = 0.05, power: float = 0.8) -> Path:
    """Write the pre-registration (``docs/hypotheses.md``); no results.

    It is :func:`mcl.stats.hypotheses.render_preregistration` of ``table`` (default
    :data:`~mcl.stats.hypotheses.HYPOTHESES`), then how the analysis computes each metric
    (:func:`mcl.analysis.run.analysis_constants_markdown`). Returns ``path``.
    """
    text = render_preregistration(HYPOTHESES if table is None else table, alpha=alpha, power=power)
    text = text.rstrip() + "\n\n" + analysis_constants_markdown()
    write_text(Path(path), text)
    return Path(path)


def write_report(params: Params, metrics_dir: Path, analysis_dir: Path, models_dir: Path, docs_dir: Path,
                 repo: Path | None = None) -> list[Path]:
    """Write ``docs_dir/{results_summary.md, analysis_report.md}`` and the figures in ``docs_dir/figures/report/``.

    Every number is formatted from a file an earlier stage wrote (see
    :func:`~mcl.report.artifacts.load_artifacts`); nothing is typed by hand.

    Parameters
    ----------
    params : Params
        The pipeline's parameters.
    metrics_dir, analysis_dir, models_dir, docs_dir : Path
        ``metrics/``, ``metrics/analysis/``, ``models/`` (each run's config.yaml) and the output folder.
    repo : Path, optional
        The repository whose git revision the experiment log names (default: the working directory).

    Returns
    -------
    list of Path
        The two documents, then the :data:`~mcl.report.figures.FIGURES`.
    """
    docs_dir = Path(docs_dir)
    fig_dir = docs_dir / FIGURE_DIR
    a = load_artifacts(params, metrics_dir, analysis_dir, models_dir)
    write_figures(a, params.finetune.method, fig_dir)
    example_figures = write_example_figures(a, fig_dir)
    documents = {"results_summary.md": results_summary(params, a, example_figures),
                 "analysis_report.md": analysis_report(params, a) + experiment_log_section(params, a, repo)}
    for name, lines in documents.items():
        write_text(docs_dir / name, "\n".join(lines) + "\n")
    return [docs_dir / name for name in documents] + [fig_dir / f for f in FIGURES]
