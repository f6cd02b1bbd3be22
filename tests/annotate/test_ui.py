"""The annotation page in headless Chromium at 1024 x 700: an annotator signs in, sees the pair
with the judges' verdict as a hint (agent and score) and no answer selected, the question on
screen without scrolling; one click selects an option; the submitted response is what the
pull returns. With `suggestions="prefill"` the judges' label comes pre-selected, as before.

Playwright (PyPI) drives Debian's /usr/bin/chromium; `playwright install` is never used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.annotate import bridge as pa
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running

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
SCREEN = {"width": 1024, "height": 700}
# Each text field on the page: its title and its text, as the annotator reads them.
FIELDS_JS = """() => Object.fromEntries([...document.querySelectorAll('.text_field_component')]
    .map(f => [f.querySelector('.text_field_component__title-content').textContent.trim(),
               f.querySelector('.content-area').innerText]))"""
# The label options: whether each is selected (Argilla renders them as inputs).
CHECKED_JS = """() => Object.fromEntries([...document.querySelectorAll('input[id^="label_"]')]
    .map(i => [i.id.replace('label_', ''), i.checked]))"""


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


def _unanimous_judged_pairs(pandalm30: PandaLM, n: int, skip: int = 0) -> pl.DataFrame:
    """Pairs whose judges all agree (so each record carries a verdict)."""
    ok = pandalm30.judges.filter(pl.col("error").is_null())
    agree = (
        ok.group_by("item_id")
        .agg(pl.col("label").n_unique().alias("labels"), pl.len().alias("n"))
        .filter((pl.col("labels") == 1) & (pl.col("n") >= 2))["item_id"]
    )
    return pandalm30.pairs.filter(pl.col("pair_id").is_in(agree.implode())).slice(skip, n)


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _sign_in_and_open(page: Any, server: Running, user: str, password: str, ds_id: str) -> None:
    page.goto(f"{server.url}/sign-in")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/$"), timeout=30_000)
    page.goto(f"{server.url}/dataset/{ds_id}/annotation-mode")
    page.get_by_text("Which response is better?").wait_for(timeout=30_000)
    page.get_by_text("Response B", exact=True).wait_for(timeout=30_000)


def _record_on_screen(page: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The pushed record whose prompt and two responses are the ones on screen, each in
    its own field (a response text can appear in several PandaLM pairs, so no text alone
    identifies a record)."""
    shown = {k: _squash(v) for k, v in page.evaluate(FIELDS_JS).items()}
    matches = [
        r
        for r in records
        if (shown.get("Prompt"), shown.get("Response A"), shown.get("Response B"))
        == tuple(_squash(r["fields"][n]) for n in ("prompt", "response_a", "response_b"))
    ]
    assert len(matches) == 1, f"exactly one pushed record is on screen: {shown}"
    return matches[0]


def _records(server: Running, dataset_id: str) -> list[dict[str, Any]]:
    from tests.annotate.helpers import rest

    with rest(server) as client:
        items: list[dict[str, Any]] = client.get(
            f"/api/v1/datasets/{dataset_id}/records",
            params={"include": "suggestions", "limit": 100},
        ).json()["items"]
    return items


def test_annotator_sees_a_hint_selects_with_one_click_and_submits(
    argilla_server: Running, pandalm30: PandaLM, browser: Any
) -> None:
    pairs = _unanimous_judged_pairs(pandalm30, 3)
    assert pairs.height == 3
    report = pa.push(
        pairs, dataset="ui-check", judge_votes=pandalm30.judges, **argilla_server.auth
    ).report
    assert report["verdicts"] == 3 and report["suggestions"] == "hint"
    user = pa.add_user(
        "ui-annotator", password="ui-pass-1234", workspaces=["argilla"], **argilla_server.auth
    )
    records = _records(argilla_server, report["dataset_id"])
    assert all(r["suggestions"] == [] for r in records)  # a hint is no Argilla suggestion

    page = browser.new_page(viewport=SCREEN)
    try:
        _sign_in_and_open(
            page, argilla_server, user["username"], "ui-pass-1234", report["dataset_id"]
        )
        record = _record_on_screen(page, records)

        # The judges' verdict is on the page as text: label, agents and score.
        fields = page.evaluate(FIELDS_JS)
        hint = _squash(fields["Judges' verdict: a hint to check, not the answer"])
        assert hint == record["fields"]["judge"]
        assert "gpt-3.5-turbo" in hint and "pandalm-7b" in hint and "score 1.00" in hint

        # Nothing is selected for the annotator.
        assert page.evaluate(CHECKED_JS) == {"a": False, "b": False, "tie": False}
        # The question and its options are on screen at 1024 x 700 without scrolling.
        for text in ("Which response is better?", *SHOWN.values()):
            box = page.get_by_text(
                text, exact=text != "Which response is better?"
            ).first.bounding_box()
            assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 700, text
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= SCREEN["width"]

        # One click selects an option; explain, submit.
        verdict = "a" if SHOWN["a"] in hint.split(";")[0] else "b"
        pick = "b" if verdict == "a" else "a"
        page.get_by_text(SHOWN[pick], exact=True).click()
        assert page.evaluate(CHECKED_JS)[pick] is True
        box = page.locator('[aria-label="Question: rationale"] [contenteditable="true"]')
        box.click()
        page.keyboard.type("checked in the browser")
        page.locator("button.button--submit").click()
        pulled = _wait_for_pull(argilla_server, "ui-check", user["username"])
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


def test_prefill_preselects_the_judges_label(
    argilla_server: Running, pandalm30: PandaLM, browser: Any
) -> None:
    pairs = _unanimous_judged_pairs(pandalm30, 2, skip=3)
    report = pa.push(
        pairs,
        dataset="ui-prefill",
        judge_votes=pandalm30.judges,
        suggestions="prefill",
        **argilla_server.auth,
    ).report
    assert report["verdicts"] == 2
    pa.add_user(
        "ui-prefill", password="ui-pass-5678", workspaces=["argilla"], **argilla_server.auth
    )
    records = _records(argilla_server, report["dataset_id"])
    page = browser.new_page(viewport=SCREEN)
    try:
        _sign_in_and_open(page, argilla_server, "ui-prefill", "ui-pass-5678", report["dataset_id"])
        record = _record_on_screen(page, records)
        (sugg,) = record["suggestions"]
        checked = page.evaluate(CHECKED_JS)
        assert checked == {k: k == sugg["value"] for k in ("a", "b", "tie")}
        marked = page.locator(".label-text:has(.label-text__suggestion)")
        assert marked.count() == 1 and SHOWN[sugg["value"]] in marked.inner_text()
    finally:
        page.close()


def _wait_for_pull(server: Running, dataset: str, username: str) -> pl.DataFrame:
    # Generous: the browser's submit and the server's write share a loaded 2-core machine.
    deadline = time.monotonic() + 60
    while True:
        pulled = pa.pull(dataset=dataset, **server.auth).main
        mine = pulled.filter(pl.col("annotator") == username)
        if mine.height or time.monotonic() > deadline:
            assert mine.height == 1, "the response submitted in the browser reached the server"
            return mine
        time.sleep(0.5)
