"""The HTML report in real headless Chromium: images decode, tables and the sample browser work.

Skipped when chromium or chromedriver is missing, except under CI (CI set), where that fails.
The full-page screenshot goes to $OBLIVIATE_TEST_ARTIFACTS (default: <repo>/test-artifacts).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from browser import browser_paths, check_report_in_browser
from report_dirs import demo_dir

from obliviate.report import write_report

ARTIFACTS = Path(
    os.environ.get(
        "OBLIVIATE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"
    )
)


def need_browser() -> None:
    browser, driver = browser_paths()
    missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium")
    if not missing:
        return
    why = f"{', '.join(missing)} not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{why}: the browser test must run under CI")
    pytest.skip(why)


def test_report_works_in_chromium(tmp_path):
    need_browser()
    run = demo_dir(tmp_path, curves=True)
    out = write_report([run])
    seen = check_report_in_browser(
        out, ["target", "retain", "ga", "npo"], ARTIFACTS / "report-browser.png"
    )
    assert seen["images"] == 3 and seen["metrics_rows"] == 4
    # 4 forget + 3 retain rows; holdout (scored only, no generations) is not browsed
    assert seen["samples"] == 7 and seen["split"] == "forget" and seen["split_rows"] == 4
    assert 0 < seen["search_rows"] < seen["samples"]
    assert seen["screenshot"].stat().st_size > 10_000
