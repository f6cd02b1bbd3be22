"""The annotation page in headless Chromium: an annotator signs in, sees the pair and the
judges' suggestion, overrides it, submits, and the pull returns exactly that response.

Playwright (PyPI) drives Debian's /usr/bin/chromium; `playwright install` is never used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.annotate import bridge as pa
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running, rest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOWN = {"a": "Response A is better", "b": "Response B is better", "tie": "Tie"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "install Debian's chromium (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def _unanimous_judged_pairs(pandalm30: PandaLM, n: int) -> pl.DataFrame:
    """Pairs whose judges all agree (so each record carries a suggestion)."""
    ok = pandalm30.judges.filter(pl.col("error").is_null())
    agree = (
        ok.group_by("item_id")
        .agg(pl.col("label").n_unique().alias("labels"), pl.len().alias("n"))
        .filter((pl.col("labels") == 1) & (pl.col("n") >= 2))["item_id"]
    )
    return pandalm30.pairs.filter(pl.col("pair_id").is_in(agree.implode())).head(n)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_annotator_submits_through_the_web_ui(
    argilla_server: Running, pandalm30: PandaLM, browser: Any
) -> None:
    pairs = _unanimous_judged_pairs(pandalm30, 3)
    assert pairs.height == 3
    report = pa.push(pairs, dataset="ui-check", suggestions=pandalm30.judges, **argilla_server.auth)
    assert report["suggestions"] == 3
    user = pa.add_user(
        "ui-annotator", password="ui-pass-1234", workspaces=["argilla"], **argilla_server.auth
    )
    with rest(argilla_server) as client:
        records = client.get(
            f"/api/v1/datasets/{report['dataset_id']}/records",
            params={"include": "suggestions", "limit": 10},
        ).json()["items"]
    by_text = {_squash(r["fields"]["response_a"]): r for r in records}

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{argilla_server.url}/sign-in")
        page.get_by_label("Username").fill(user["username"])
        page.get_by_label("Password").fill("ui-pass-1234")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r".*/$"), timeout=30_000)
        page.goto(f"{argilla_server.url}/dataset/{report['dataset_id']}/annotation-mode")
        page.get_by_text("Which response is better?").wait_for(timeout=30_000)
        page.get_by_text("Response B", exact=True).wait_for(timeout=30_000)
        body = _squash(page.inner_text("body"))

        # The pair on screen is one of ours, shown in its stored order.
        shown = [r for text, r in by_text.items() if text in body]
        assert len(shown) == 1, "exactly one pushed record is on screen"
        record = shown[0]
        for name in ("prompt", "response_a", "response_b"):
            assert _squash(record["fields"][name]) in body
        # The judges' suggestion is marked on its label, with its score.
        (sugg,) = record["suggestions"]
        marked = page.locator(".label-text:has(.label-text__suggestion)")
        assert marked.count() == 1
        assert SHOWN[sugg["value"]] in marked.inner_text()
        assert "1.0" in marked.inner_text()

        # Override the suggestion, explain, submit.
        pick = "a" if sugg["value"] != "a" else "b"
        page.get_by_text(SHOWN[pick], exact=True).click()
        box = page.locator('[aria-label="Question: rationale"] [contenteditable="true"]')
        box.click()
        page.keyboard.type("checked in the browser")
        page.locator("button.button--submit").click()
        pulled = _wait_for_pull(argilla_server, user["username"])
    finally:
        page.close()

    row = pulled.row(0, named=True)
    order = record["metadata"]["order"]
    canonical = pick if order == "ab" else {"a": "b", "b": "a"}[pick]
    assert row["item_id"] == record["external_id"]
    assert row["label"] == canonical and row["order"] == order
    assert row["rationale"] == "checked in the browser"
    assert row["status"] == "submitted" and row["annotator_kind"] == "human"
    # The label refers to canonical sides of the original pair.
    source = pairs.filter(pl.col("pair_id") == record["external_id"]).row(0, named=True)
    a, b = ids.canonical_sides(source["chosen"], source["rejected"])
    clicked_text = record["fields"]["response_a" if pick == "a" else "response_b"]
    assert clicked_text == (a if canonical == "a" else b)


def _wait_for_pull(server: Running, username: str) -> pl.DataFrame:
    import time

    deadline = time.monotonic() + 20
    while True:
        pulled, _ = pa.pull("ui-check", **server.auth)
        mine = pulled.filter(pl.col("annotator") == username)
        if mine.height or time.monotonic() > deadline:
            assert mine.height == 1, "the response submitted in the browser reached the server"
            return mine
        time.sleep(0.5)
