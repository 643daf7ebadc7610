"""The command-line side of the HTML pages: `fedgc inspect RUN [RUN_B] --html` writes a report (or a
comparison) file; `fedgc serve DIR` is fedgc.report.web.live.serve. fedgc.cli only delegates here."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from fedgc.errors import FedGCError
from fedgc.files import write_text
from fedgc.report.inspected import Inspected
from fedgc.report.ranking import file_name_at_alpha
from fedgc.report.result_json import read_result
from fedgc.report.web.html import comparison_page, plotly_bundle, report_page

REPORT_FILE = "report.html"
COMPARISON_FILE = "compare.html"


def write_html(results: Sequence[Inspected], *, out_dir: Path | None = None, alpha: float | None = None) -> Path:
    """Write report.html of one loaded result, or compare.html of two (B against A), into out_dir
    (default: the first run's folder; created). The pages open at FDR level `alpha` (default: each
    run's own). result.json is only read. Returns the file written."""
    if len(results) not in (1, 2):
        raise FedGCError(f"--html takes one run folder (a report) or two (a comparison), got {len(results)}")
    if not plotly_bundle().vendored:
        print("fedgc: note: plotly.js's cartesian bundle is not installed (scripts/setup.sh fetches it from npm); "
              "the page inlines the plotly package's full bundle instead (larger, slower to open)", file=sys.stderr)  # fmt: skip
    out = Path(out_dir) if out_dir is not None else results[0].path.parent
    out.mkdir(parents=True, exist_ok=True)
    if len(results) == 1:
        path = out / file_name_at_alpha(REPORT_FILE, results[0])
        page = report_page(read_result(results[0].path), alpha=alpha)
    else:
        a, b = results
        labels = _labels(a, b)
        path, page = out / file_name_at_alpha(COMPARISON_FILE, a), comparison_page(read_result(a.path), read_result(b.path), labels=labels,
                                                            alpha=alpha)  # fmt: skip
    write_text(path, page)
    return path


def _labels(a: Inspected, b: Inspected) -> tuple[str, str]:
    """Short names for the two runs: their names, or their folders when the names are equal."""
    if a.name != b.name:
        return a.name, b.name
    fa, fb = a.path.parent.name, b.path.parent.name
    return (fa, fb) if fa != fb else ("A", "B")


__all__ = ["COMPARISON_FILE", "REPORT_FILE", "write_html"]
