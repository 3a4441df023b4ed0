"""The one contract of the studies: each computes its page, its data and its figures; the CLI writes them
with :func:`write_study`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StudyResult:
    """A finished study: ``markdown`` (its page), ``data`` (what the page was built from, for the CLI's
    message and for tests) and ``figures`` (output path -> matplotlib figure, not yet saved)."""

    markdown: str
    data: Any
    figures: dict[Path, Any] = field(default_factory=dict)


def write_study(result: StudyResult, out: str | Path) -> None:
    """Save a study's figures, then write its page to ``out`` (each atomically)."""
    from mcl.io import write_text
    from mcl.plots import save_figure

    for path, fig in result.figures.items():
        save_figure(fig, path)
    write_text(out, result.markdown)
