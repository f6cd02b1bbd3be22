"""QA reports: a self-contained HTML page with plots, a JSON summary and a dataset card.

`build_report(data, *, out_dir, ...)` writes report.html, report.json and README.md; see
`prefdata.report.build`. The figures come from the quality stages (`prefdata.quality`) and
`prefdata.io.describe`; `prefdata.report.figures` says which function gives each one.
"""

from prefdata.report.build import build_report, compute_report

__all__ = ["build_report", "compute_report"]
