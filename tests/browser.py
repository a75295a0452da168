"""Open an obliviate HTML report in headless Chromium and exercise it like a reader would."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser_paths() -> tuple[str | None, str | None]:
    """(browser binary, chromedriver) found on PATH, None where missing."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    return browser, shutil.which("chromedriver")


def _driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = browser_paths()
    assert browser and driver, "chromium and chromedriver must be on PATH"
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    # an explicit driver path: selenium-manager never runs (nothing is downloaded)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def _visible(d: Any) -> list[Any]:
    return [
        tr
        for tr in d.find_elements("css selector", "#samples-table tbody tr.sample")
        if tr.is_displayed()
    ]


def _count(d: Any) -> tuple[int, int]:
    text = d.find_element("id", "sample-count").text
    m = re.fullmatch(r"(\d+) of (\d+) samples", text.strip())
    assert m, f"#sample-count reads {text!r}"
    return int(m.group(1)), int(m.group(2))


def _type(d: Any, element: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    if text:
        element.send_keys(text)


def _pick_word(questions: list[str], rows_text: list[str]) -> str:
    """A word from one question that some, but not all, sample rows contain."""
    total = len(rows_text)
    best: tuple[int, str] | None = None
    for q in questions:
        for w in re.findall(r"[A-Za-z]{4,}", q):
            n = sum(w.lower() in t for t in rows_text)
            if 0 < n < total and (best is None or n < best[0]):
                best = (n, w)
        if best:
            return best[1]
    raise AssertionError("no question word narrows the sample list")


def _check_sorting(d: Any) -> None:
    """Clicking an "up" column sorts best (highest) first, a second click reverses."""
    heads = d.find_elements("css selector", "#metrics-table thead th")
    col = next((i for i, h in enumerate(heads) if h.get_attribute("data-dir") == "up"), None)
    if col is None:
        return

    def values() -> list[float | None]:
        cells = d.find_elements("css selector", f"#metrics-table tbody td:nth-child({col + 1})")
        return [
            None if c.get_attribute("data-v") is None else float(c.get_attribute("data-v"))
            for c in cells
        ]

    heads[col].click()
    got = values()
    nums = [v for v in got if v is not None]
    assert nums == sorted(nums, reverse=True) and got[: len(nums)] == nums, got
    heads[col].click()
    got = values()
    nums = [v for v in got if v is not None]
    assert nums == sorted(nums) and got[: len(nums)] == nums, got


def _check_sticky_first_column(d: Any) -> None:
    """Scrolling the wide metrics table sideways keeps the run column in place."""
    first = d.find_element("css selector", "#metrics-table tbody td:first-child")
    x0 = first.rect["x"]
    scrolled = d.execute_script(
        "var s = document.querySelector('#metrics .scroll'); s.scrollLeft = 400;"
        "return s.scrollLeft;"
    )
    if scrolled:  # the table is wider than the page
        assert abs(first.rect["x"] - x0) < 1, "the run column is not sticky"
    d.execute_script("document.querySelector('#metrics .scroll').scrollLeft = 0")


def check_report_in_browser(html_path: Path, run_names: list[str], screenshot: Path) -> dict:
    """Load ``html_path`` from file:// in headless Chromium and check it; returns what it saw.

    Checks: no JavaScript error; every image decoded; one metrics-table row per run, named
    ``run_names`` in order; then saves a full-page PNG screenshot to ``screenshot``; then header
    clicks sort the metrics table, its run column stays put when scrolled sideways, and the
    sample browser's split filter, search box (narrow, then clear) and after-run switch work.
    """
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = _driver()
    seen: dict[str, Any] = {}
    try:
        d.get(Path(html_path).resolve().as_uri())
        WebDriverWait(d, 20).until(
            lambda x: x.execute_script("return document.readyState") == "complete"
        )
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, f"JavaScript errors: {errors}"

        images = d.execute_script(
            "return Array.from(document.images).map("
            "i => [i.complete, i.naturalWidth, i.alt, i.src.slice(0, 22)])"
        )
        assert images, "the report has no images"
        for complete, width, alt, src in images:
            assert complete and width > 0, f"image {alt!r} did not decode"
            assert src == "data:image/png;base64," and alt
        seen["images"] = len(images)

        rows = d.find_elements("css selector", "#metrics-table tbody tr")
        names = [r.get_attribute("data-run") for r in rows]
        assert names == list(run_names), names
        seen["metrics_rows"] = len(rows)

        # the page as it first shows (before the clicks below change it)
        d.execute_script("window.scrollTo(0, 0)")
        size = d.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        shot = d.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
            },
        )
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        screenshot = Path(screenshot)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(png)
        seen["screenshot"] = screenshot
        seen["page_size"] = tuple(size)

        _check_sorting(d)
        _check_sticky_first_column(d)

        # split filter
        split_sel = Select(d.find_element("id", "split-filter"))
        values = [o.get_attribute("value") for o in split_sel.options]
        assert values[0] == "all" and len(values) > 1, values
        shown, total = _count(d)
        assert shown == total == len(_visible(d)) > 0
        split = values[1]
        split_sel.select_by_value(split)
        vis = _visible(d)
        assert vis and all(tr.get_attribute("data-split") == split for tr in vis)
        assert _count(d) == (len(vis), total)
        seen["split"], seen["split_rows"] = split, len(vis)
        split_sel.select_by_value("all")
        assert _count(d) == (total, total)

        # search: a word from one question narrows the rows to those containing it
        all_rows = _visible(d)
        questions = [tr.find_element("css selector", "td.q").text for tr in all_rows]
        texts = [tr.text.lower() for tr in all_rows]
        word = _pick_word(questions, texts)
        box = d.find_element("id", "sample-search")
        _type(d, box, word)
        vis = _visible(d)
        assert 0 < len(vis) < total, (word, len(vis), total)
        assert all(word.lower() in tr.text.lower() for tr in vis)
        assert _count(d) == (len(vis), total)
        seen["search"], seen["search_rows"] = word, len(vis)
        _type(d, box, "")
        assert _count(d) == (total, total) and len(_visible(d)) == total
        seen["samples"] = total

        # after-run switch changes the after column
        after_sel = Select(d.find_element("id", "after-run"))
        options = [o.get_attribute("value") for o in after_sel.options]
        assert len(options) > 1, "need two after-run choices"
        col = "#samples-table tbody td.after"
        before = [td.text for td in d.find_elements("css selector", col)]
        current = after_sel.first_selected_option.get_attribute("value")
        other = next(v for v in options if v != current)
        after_sel.select_by_value(other)
        now = [td.text for td in d.find_elements("css selector", col)]
        assert now != before, "switching #after-run did not change the after column"
        assert _count(d) == (total, total)
        after_sel.select_by_value(current)
        assert [td.text for td in d.find_elements("css selector", col)] == before
        seen["after_options"] = len(options)

    finally:
        d.quit()
    return seen
