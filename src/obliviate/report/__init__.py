"""Reports over finished runs: one self-contained HTML page, and ranked leaderboards.

matplotlib is only imported when a report is rendered.
"""

from obliviate.report.compare import leaderboard
from obliviate.report.html import render_report, write_report
from obliviate.report.runs import Run, load_runs

__all__ = ["Run", "leaderboard", "load_runs", "render_report", "write_report"]
