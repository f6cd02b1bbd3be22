"""report.html in headless Chromium (Debian's /usr/bin/chromium through Playwright): no
console errors, no request leaves file://, every plot rendered with its axes, a non-blank
screenshot, a `<script>` inside a response shown as text, never run; the table of pairs
searches, filters, sorts and opens a row; long text and text under a content warning open
on request; nothing overflows at 1024 px and no plot title is cut."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.audit import audit
from prefdata.quality.filter import filter_pairs
from tests.report.conftest import HOSTILE, HOSTILE_IMG, write_report

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
    write_report(
        pairs,
        root / "single",
        annotations=anns,
        issues=issues,
        rejected=rejected,
        sample=sample,
        tokenizer="smollm2",
        max_length=256,
    )
    write_report(
        kept,
        root / "compare",
        before=pairs,
        annotations=anns,
        issues=issues,
        rejected=rejected,
        tokenizer=None,
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

    # The hostile response is on the page as text, and never ran: the page's only scripts
    # are the table's data block(s) and its own code.
    assert page.evaluate("typeof window.__pwned") == "undefined"
    kinds = page.evaluate("[...document.scripts].map(s => s.type || 'code')")
    assert kinds.count("code") == 1 and set(kinds) == {"code", "application/json"}
    assert page.evaluate("document.images.length") == 0
    browse = page.locator(".browse").first
    browse.locator(".f-flag").select_option("all")
    browse.locator(".q").fill("__pwned")
    browse.locator("button.open").first.click()
    text = browse.inner_text()
    assert "<script>window.__pwned = 1;" in text
    assert page.evaluate("typeof window.__pwned") == "undefined"

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


def _no_overflow(page: Any) -> None:
    """No horizontal scroll of the page, every plot inside its box, no plot title cut."""
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    problems = page.evaluate(
        """() => [...document.querySelectorAll('svg.plot')].flatMap(s => {
            const box = s.getBoundingClientRect(), parent = s.parentElement.getBoundingClientRect();
            const title = s.querySelector('text.plot-title').getBBox();
            const width = s.viewBox.baseVal.width, out = [];
            if (box.right > parent.right + 1) out.push(['plot past its box', s.ariaLabel]);
            if (title.x < 0 || title.x + title.width > width) out.push(['title cut', s.ariaLabel]);
            return out; })"""
    )
    assert problems == []


@pytest.mark.parametrize("which", ["single", "compare"])
def test_no_layout_overflow_at_1024(browser: Any, reports: dict[str, Path], which: str) -> None:
    for width in (1024, 1280):
        page = browser.new_page(viewport={"width": width, "height": 800})
        page.goto(reports[which].as_uri())
        _no_overflow(page)
        page.close()


def _rows(browse: Any) -> list[dict[str, str]]:
    return list(
        browse.evaluate(
            """b => [...b.querySelectorAll('tbody tr.row')].map(r =>
                Object.fromEntries([...r.children].slice(1).map((td, i) =>
                    [b.querySelectorAll('thead th')[i + 1].dataset.key, td.textContent])))"""
        )
    )


def test_table_searches_filters_sorts_and_opens(
    browser: Any, reports: dict[str, Path], shared_data: Path
) -> None:
    import json

    page = browser.new_page(viewport={"width": 1024, "height": 800})
    page.goto(reports["single"].as_uri())
    data = json.loads((reports["single"].parent / "report.json").read_text())["data"]
    rows = data["pairs"]["rows"]
    flagged = [r for r in rows if r["flagged"]]
    browse = page.locator(".browse")
    count = browse.locator(".count")
    # Flagged pairs first, the page tells how many match.
    assert count.inner_text().startswith(f"{len(flagged):,} of {len(rows):,} rows here match")
    # Search by a pair id: exactly that pair.
    target = flagged[len(flagged) // 2]
    browse.locator(".q").fill(target["id"])
    assert [r["id"] for r in _rows(browse)] == [target["id"]]
    # Search by text inside a response.
    browse.locator(".q").fill(target["chosen"]["text"][:40])
    assert target["id"] in [r["id"] for r in _rows(browse)]
    browse.locator(".q").fill("")
    # Filter by an issue: every flagged pair with that issue row, counted independently.
    name = "annotator_disagreement"
    browse.locator(".f-issue").select_option(name)
    want = sum(1 for r in flagged if any(i["issue"] == name for i in r["issues"]))
    assert count.inner_text().startswith(f"{want:,} of")
    # And by confidence: at most 0.7.
    browse.locator(".f-cmax").fill("0.7")
    want = sum(
        1
        for r in flagged
        if any(i["issue"] == name for i in r["issues"])
        and r["confidence"] is not None
        and r["confidence"] <= 0.7
    )
    assert count.inner_text().startswith(f"{want:,} of" if want else "no row matches")
    browse.locator(".f-cmax").fill("")
    browse.locator(".f-issue").select_option("")
    # Agreement, a flag's score and the model-based P(swapped), each counted here; each
    # bound is a value the rows hold (the highest one, as a lower bound; the lowest, as an
    # upper bound), so the filter keeps some rows and drops others.
    for selector, key, at_least in (
        (".f-amin", "agreement", True),
        (".f-amax", "agreement", False),
        (".f-smax", "min_score", False),
        (".f-pmin", "p", True),
    ):
        values = sorted({r[key] for r in flagged if r[key] is not None})
        assert len(values) > 1, key
        bound = values[-1] if at_least else values[0]
        browse.locator(selector).fill(repr(bound))
        want = sum(
            1
            for r in flagged
            if r[key] is not None and (r[key] >= bound if at_least else r[key] <= bound)
        )
        assert 0 < want < len(flagged), (key, want)
        assert count.inner_text().startswith(f"{want:,} of"), (key, bound, want)
        browse.locator(selector).fill("")
    assert data["pairs"]["has_model"]  # PandaLM's votes give the model-based probability
    # Sort by confidence, lowest first (one click: descending; two: ascending).
    header = browse.locator("th[data-key=confidence]")
    header.click()
    header.click()
    shown = [float(r["confidence"]) for r in _rows(browse) if r["confidence"] != "–"]
    lowest = min(r["confidence"] for r in flagged if r["confidence"] is not None)
    assert shown == sorted(shown) and shown[0] == pytest.approx(lowest, abs=5e-4)  # 3 decimals
    # Open a row: its issues with their reasons and scores, and its texts.
    browse.locator("button.open").first.click()
    detail = browse.locator("td.detail").first
    assert detail.is_visible() and "score" in detail.inner_text()
    page.close()


def test_long_and_harmful_text_open_on_request(
    browser: Any, shared_data: Path, tmp_path: Path
) -> None:
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    pairs = pairs.head(40)
    long_text = "A long answer, said slowly. " * 100  # 2,800 characters
    plain = pairs.head(1).with_columns(  # a pair of our own: no known source, no warning
        pl.lit(long_text).alias("chosen"),
        pl.lit("own-data").alias("source"),
        pl.lit("{}").alias("provenance"),
    )
    from prefdata import ids

    plain = ids.with_pair_ids(plain.drop("pair_id"))
    issues = audit(pairs, sample=0).tables["issues"]
    write_report(
        pl.concat([pairs, plain.select(pairs.columns)]), tmp_path, issues=issues, tokenizer=None
    )
    page = browser.new_page(viewport={"width": 1024, "height": 800})
    page.goto((tmp_path / "report.html").as_uri())
    assert "Content warning:" in page.locator("body > p.cw").inner_text()
    browse = page.locator(".browse")
    browse.locator(".f-flag").select_option("all")

    # HH-RLHF text is hidden behind its content warning until asked for.
    browse.locator(".f-source").select_option("hh-rlhf")
    browse.locator("button.open").first.click()
    detail = browse.locator("td.detail").first
    assert "Content warning: HH-RLHF" in detail.inner_text()
    hidden = detail.locator(".tb .text").first
    assert not hidden.is_visible()
    detail.locator("button.show").first.click()
    assert hidden.is_visible() and hidden.inner_text().strip()

    # A long text shows a preview, and all of it after one click.
    browse.locator(".f-source").select_option("own-data")
    browse.locator("button.open").first.click()
    detail = browse.locator("td.detail").first
    chosen = detail.locator(".tb").nth(1)
    assert len(chosen.locator(".text").inner_text()) < 400
    chosen.locator("button.show").click()
    assert chosen.locator(".text").inner_text().startswith(long_text.strip()[:1000])
    assert len(chosen.locator(".text").inner_text()) >= 1500
    page.close()


@pytest.fixture(scope="module")
def hh_page(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole HH-RLHF harmless test set (2,303 pairs) after a rule-based audit."""
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    issues = audit(pairs, sample=0).tables["issues"]
    out = tmp_path_factory.mktemp("hh") / "qa"
    write_report(pairs, out, issues=issues, tokenizer=None, bootstrap=200)
    return out / "report.html"


def test_hh_rlhf_every_flagged_pair_can_be_found_and_read(browser: Any, hh_page: Path) -> None:
    """A curator finds each flagged HH-RLHF pair by its id and reads its text behind the
    content warning; the page fits 1024 px and wider, the scatter's title whole."""
    import json

    figures = json.loads((hh_page.parent / "report.json").read_text())["data"]
    rows = figures["pairs"]["rows"]
    flagged = [r for r in rows if r["flagged"]]
    # Every flagged pair is on the page (HH is well under the page's cap).
    assert len(flagged) == figures["pairs"]["included"]["flagged_total"] > 100
    for width in (1024, 1366, 1920):
        page = browser.new_page(viewport={"width": width, "height": 800})
        page.goto(hh_page.as_uri())
        _no_overflow(page)
        titles = page.evaluate(
            """[...document.querySelectorAll('svg.plot text.plot-title')].map(t =>
                [...t.querySelectorAll('tspan')].map(s => s.textContent).join(' '))"""
        )  # a long title wraps onto lines (tspans); joined, it is whole
        assert any("of 2,303 pairs)" in t for t in titles), titles
        page.close()
    page = browser.new_page(viewport={"width": 1024, "height": 700})
    page.goto(hh_page.as_uri())
    browse = page.locator(".browse")
    count = browse.locator(".count")
    assert count.inner_text().startswith(f"{len(flagged):,} of {len(rows):,} rows here match")
    picked = np.random.default_rng(5).choice(len(flagged), 4, replace=False)
    for i in picked.tolist():
        target = flagged[i]
        browse.locator(".q").fill(target["id"])
        assert [r["id"] for r in _rows(browse)] == [target["id"]]
        browse.locator("button.open").first.click()
        detail = browse.locator("td.detail").first
        shown = detail.inner_text()
        assert "Content warning: HH-RLHF" in shown
        for issue in target["issues"]:
            assert issue["issue"] in shown
        buttons = detail.locator("button.show")
        assert buttons.count() == 3  # prompt, chosen, rejected: each hidden until asked
        while buttons.count():  # a clicked button goes away
            buttons.first.click()
        text = detail.inner_text()
        for side in ("chosen", "rejected"):
            start = " ".join(target[side]["text"].split())[:60]
            assert start in " ".join(text.split()), (side, start)
        browse.locator("button.open").first.click()  # close it again
    page.close()
