"""report.html in headless Chromium (Debian's /usr/bin/chromium through Playwright): no
console errors, no request leaves file://, every plot rendered with its axes, a non-blank
screenshot, and a `<script>` inside a response shown as text, never run."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.audit import audit
from prefdata.quality.filter import filter_pairs
from prefdata.report import build_report
from tests.report.conftest import HOSTILE, HOSTILE_IMG

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def reports(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    pairs, anns = imported.tables["pairs"], imported.tables["annotations"]
    # A hostile response (pair_id kept, so its votes still match) and a hostile source name.
    pairs = pairs.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(f"Sure! {HOSTILE}{HOSTILE_IMG}"))
        .otherwise(pl.col("chosen"))
        .alias("chosen"),
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit(HOSTILE))
        .otherwise(pl.col("source"))
        .alias("source"),
    )
    _audited = audit(pairs, annotations=anns, sample=30)
    issues, sample, _ = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    sample = sample.with_columns(
        pl.Series("mislabeled", [i % 5 == 0 for i in range(sample.height)], dtype=pl.Boolean)
    )
    # The hostile pair is the first flagged one, so it shows in the top list.
    hostile_issue = pl.DataFrame(
        {
            "item_id": [pairs["pair_id"][0]],
            "issue": [f"html{HOSTILE}"],
            "score": [0.0],
            "is_issue": [True],
            "reason": [HOSTILE_IMG],
        }
    )
    issues = pl.concat([hostile_issue, issues], how="diagonal_relaxed")
    filtered = filter_pairs(pairs, issues=issues, min_confidence=0.9)
    kept, rejected = filtered.tables["pairs"], filtered.rejected
    root = tmp_path_factory.mktemp("reports")
    build_report(
        pairs,
        annotations=anns,
        issues=issues,
        rejected=rejected,
        sample=sample,
        tokenizer="smollm2",
        max_length=256,
        out_dir=root / "single",
    )
    build_report(
        pairs,
        compare=kept,
        annotations=anns,
        issues=issues,
        rejected=rejected,
        tokenizer=None,
        out_dir=root / "compare",
    )
    return {"single": root / "single" / "report.html", "compare": root / "compare" / "report.html"}


@pytest.mark.parametrize("which", ["single", "compare"])
def test_report_renders_offline_and_safely(
    browser: Any, reports: dict[str, Path], which: str, tmp_path: Path
) -> None:
    page_path = reports[which]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r: Any) -> None:
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("networkidle")

    assert errors == []
    assert outside == []
    assert requests == [page_path.as_uri()]  # the page itself and nothing else

    # The hostile response is on the page as text, and never ran.
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.images.length") == 0
    text = page.inner_text("body")
    assert "<script>window.__pwned = 1;" in text

    plots = page.evaluate(
        """() => [...document.querySelectorAll('svg.plot')].map(s => {
            const box = s.getBoundingClientRect();
            const axis = a => s.querySelector('g.axis.' + a);
            return {
              title: s.querySelector('title').textContent,
              w: box.width, h: box.height,
              x: !!axis('x') && axis('x').querySelectorAll('line').length > 0
                 && axis('x').querySelectorAll('text').length > 0,
              y: !!axis('y') && axis('y').querySelectorAll('line').length > 0
                 && axis('y').querySelectorAll('text').length > 0,
              marks: s.querySelectorAll('.mark').length,
              drawn: [...s.querySelectorAll('.mark')].some(m => {
                const b = m.getBoundingClientRect(); return b.width > 0 || b.height > 0; }),
            };
        })"""
    )
    titles = [p["title"] for p in plots]
    assert len(plots) >= (14 if which == "single" else 28), titles
    for p in plots:
        assert p["w"] > 100 and p["h"] > 80, p
        assert p["x"] and p["y"], f"plot without axes: {p}"
        assert p["marks"] > 0 and p["drawn"], f"empty plot: {p}"
    for kind in (
        "Cohen's kappa, every pair",
        "sequence length",
        "confidence",
        "flagged rows by issue",
        "dropped rows by first reason",
    ):
        assert any(t.startswith(kind) for t in titles), (kind, titles)
    assert any(t.startswith("chosen vs rejected length") for t in titles)

    shot = page.screenshot(full_page=True)
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)
    assert image.shape[0] > 3000  # the whole report, not a blank first screen
    assert image.std() > 20
    assert (image < 200).mean() > 0.01  # ink: text and marks, not a white page
    keep = os.environ.get("PREFDATA_SCREENSHOTS")  # a folder, to look at them yourself
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"report-{which}.png").write_bytes(shot)

    # Printable: Chromium lays it out as a PDF of several pages.
    pdf = page.pdf(path=str(tmp_path / "report.pdf"))
    assert pdf[:4] == b"%PDF" and pdf.count(b"/Type /Page") >= 3
    page.close()
