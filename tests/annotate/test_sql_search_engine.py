"""The SQL search-engine plugin (annotate/sql_search_engine.py) through the server's REST API.

Every answer is checked against what the test itself put in: filters on record status,
per-user response status, response values, suggestion value / agent / score, metadata;
sorting; offset / limit with totals; text search; metadata metrics; progress counts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from prefdata.annotate import bridge as pa
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running, my_queue, push_report, respond, rest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]


@pytest.fixture(scope="module")
def world(argilla_server: Running, pandalm30: PandaLM) -> dict[str, Any]:
    """12 pairs with suggestions; s1 submits 5 (label a), s2 submits 2 (tie) and discards 1."""
    users = {
        name: pa.add_user(name, workspaces=["argilla"], **argilla_server.auth)
        for name in ("s1", "s2")
    }
    push_report(
        pandalm30.pairs.head(12),
        dataset="search-check",
        judge_votes=pandalm30.judges,
        suggestions="prefill",
        annotators_per_item=2,
        **argilla_server.auth,
    )
    with pa.connection(**argilla_server.auth) as conn:
        ds = pa.find_dataset(conn, "search-check")
    assert ds is not None
    with rest(argilla_server) as owner:
        records = owner.get(
            f"/api/v1/datasets/{ds['id']}/records",
            params={"include": "suggestions", "limit": 100},
        ).json()["items"]
    answered: dict[str, list[str]] = {"s1": [], "s2": []}
    with rest(argilla_server, users["s1"]["api_key"]) as client:
        for rec in my_queue(client, ds["id"])[:5]:
            respond(client, rec["id"], {"label": "a"})
            answered["s1"].append(rec["id"])
    with rest(argilla_server, users["s2"]["api_key"]) as client:
        queue = [r for r in my_queue(client, ds["id"]) if r["id"] not in answered["s1"]]
        for rec in queue[:2]:
            respond(client, rec["id"], {"label": "tie"})
            answered["s2"].append(rec["id"])
        respond(client, queue[2]["id"], {}, status="discarded")
        discarded = queue[2]["id"]
    return {
        "ds": ds,
        "records": {r["id"]: r for r in records},
        "users": users,
        "answered": answered,
        "discarded": discarded,
    }


def _search(
    server: Running, ds_id: str, body: dict[str, Any], *, key: str | None = None, **params: Any
) -> tuple[list[str], int]:
    path = f"/api/v1/{'me/' if key else ''}datasets/{ds_id}/records/search"
    with rest(server, key) as client:
        resp = client.post(path, json=body, params=params)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    return [item["record"]["id"] for item in data["items"]], data["total"]


def _terms(entity: str, values: list[str], **scope: Any) -> dict[str, Any]:
    return {"type": "terms", "scope": {"entity": entity, **scope}, "values": values}


def _filters(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"filters": {"and": list(parts)}}


def test_plain_search_pages_through_everything_in_a_stable_order(
    argilla_server: Running, world: dict[str, Any]
) -> None:
    ds_id = world["ds"]["id"]
    everything, total = _search(argilla_server, ds_id, {}, limit=100)
    assert total == 12 and sorted(everything) == sorted(world["records"])
    paged: list[str] = []
    for offset in range(0, 12, 5):
        page, page_total = _search(argilla_server, ds_id, {}, offset=offset, limit=5)
        assert page_total == 12
        paged += page
    assert paged == everything  # no record twice, none missing, same order


def test_record_and_response_status_filters(argilla_server: Running, world: dict[str, Any]) -> None:
    ds_id = world["ds"]["id"]
    s1, s2 = world["answered"]["s1"], world["answered"]["s2"]
    # min_submitted = 2 and nobody answered the same record twice: nothing is complete.
    _, completed = _search(
        argilla_server, ds_id, _filters(_terms("record", ["completed"], property="status"))
    )
    assert completed == 0
    # Owner search: response status over everyone's responses.
    ids, total = _search(
        argilla_server,
        ds_id,
        _filters(_terms("response", ["submitted"], property="status")),
        limit=100,
    )
    assert total == 7 and set(ids) == set(s1 + s2)
    ids, total = _search(
        argilla_server,
        ds_id,
        _filters(_terms("response", ["discarded"], property="status")),
    )
    assert ids == [world["discarded"]]
    _, total = _search(
        argilla_server, ds_id, _filters(_terms("response", ["pending"], property="status"))
    )
    assert total == 12 - 8  # no response from anyone
    # An annotator's own view: pending means "no response by me".
    key = world["users"]["s2"]["api_key"]
    ids, total = _search(
        argilla_server,
        ds_id,
        _filters(_terms("response", ["pending"], property="status")),
        key=key,
        limit=100,
    )
    assert total == 12 - 3 and not set(ids) & {*s2, world["discarded"]}
    ids, total = _search(
        argilla_server,
        ds_id,
        _filters(_terms("response", ["submitted", "pending"], property="status")),
        key=key,
        limit=100,
    )
    assert total == 12 - 1 and world["discarded"] not in ids


def test_response_value_filter(argilla_server: Running, world: dict[str, Any]) -> None:
    ds_id = world["ds"]["id"]
    ids, total = _search(
        argilla_server,
        ds_id,
        _filters(_terms("response", ["tie"], question="label")),
        limit=100,
    )
    assert total == 2 and set(ids) == set(world["answered"]["s2"])


def test_suggestion_filters_and_sort(argilla_server: Running, world: dict[str, Any]) -> None:
    ds_id = world["ds"]["id"]
    suggestions = {
        rid: rec["suggestions"][0] for rid, rec in world["records"].items() if rec["suggestions"]
    }
    assert suggestions
    by_value = Counter(s["value"] for s in suggestions.values())
    for value, n in by_value.items():
        ids, total = _search(
            argilla_server,
            ds_id,
            _filters(_terms("suggestion", [value], question="label", property="value")),
            limit=100,
        )
        assert total == n
        assert {suggestions[i]["value"] for i in ids} == {value}
    agent = next(iter(suggestions.values()))["agent"]
    ids, _ = _search(
        argilla_server,
        ds_id,
        _filters(_terms("suggestion", [agent], question="label", property="agent")),
        limit=100,
    )
    assert set(ids) == {i for i, s in suggestions.items() if s["agent"] == agent}
    ids, _ = _search(
        argilla_server,
        ds_id,
        _filters(
            {
                "type": "range",
                "scope": {"entity": "suggestion", "question": "label", "property": "score"},
                "ge": 0.9,
            }
        ),
        limit=100,
    )
    assert set(ids) == {i for i, s in suggestions.items() if s["score"] >= 0.9}
    # Sorted by suggestion score, highest first; records without one sort last.
    body = {
        "sort": [
            {
                "scope": {"entity": "suggestion", "question": "label", "property": "score"},
                "order": "desc",
            }
        ]
    }
    ids, _ = _search(argilla_server, ds_id, body, limit=100)
    scores = [suggestions[i]["score"] if i in suggestions else -1.0 for i in ids]
    assert scores == sorted(scores, reverse=True)


def test_metadata_filter_sort_and_metrics(argilla_server: Running, world: dict[str, Any]) -> None:
    ds_id = world["ds"]["id"]
    orders = {rid: rec["metadata"]["order"] for rid, rec in world["records"].items()}
    ids, total = _search(
        argilla_server,
        ds_id,
        _filters(_terms("metadata", ["ab"], metadata_property="order")),
        limit=100,
    )
    assert set(ids) == {i for i, o in orders.items() if o == "ab"} and total == len(ids)
    body = {
        "sort": [{"scope": {"entity": "metadata", "metadata_property": "order"}, "order": "asc"}]
    }
    ids, _ = _search(argilla_server, ds_id, body, limit=100)
    assert [orders[i] for i in ids] == sorted(orders.values())
    with rest(argilla_server) as client:
        props = client.get(f"/api/v1/me/datasets/{ds_id}/metadata-properties").json()["items"]
        (order_prop,) = [p for p in props if p["name"] == "order"]
        metrics = client.get(f"/api/v1/metadata-properties/{order_prop['id']}/metrics").json()
    assert metrics["type"] == "terms" and metrics["total"] == 12
    assert {v["term"]: v["count"] for v in metrics["values"]} == dict(Counter(orders.values()))


def test_text_search(argilla_server: Running, world: dict[str, Any]) -> None:
    ds_id = world["ds"]["id"]
    rid, word = next(
        (rid, w)
        for rid, rec in world["records"].items()
        for w in rec["fields"]["response_b"].split()
        if w.isascii() and w.isalpha() and len(w) > 6
    )
    word = word.upper()  # case does not matter (ASCII)
    ids, total = _search(argilla_server, ds_id, {"query": {"text": {"q": word}}}, limit=100)
    expected = {
        i
        for i, r in world["records"].items()
        if any(word.lower() in str(v).lower() for v in r["fields"].values())
    }
    assert rid in ids and set(ids) == expected and total == len(expected)
    ids, _ = _search(
        argilla_server,
        ds_id,
        {"query": {"text": {"q": word, "field": "response_b"}}},
        limit=100,
    )
    assert set(ids) == {
        i for i, r in world["records"].items() if word.lower() in r["fields"]["response_b"].lower()
    }
    _, total = _search(
        argilla_server, ds_id, {"query": {"text": {"q": f"{word} zzzqqqxxx"}}}, limit=100
    )
    assert total == 0  # every word must occur


def test_progress_and_user_metrics(argilla_server: Running, world: dict[str, Any]) -> None:
    ds_id = world["ds"]["id"]
    with rest(argilla_server) as client:
        progress = client.get(f"/api/v1/datasets/{ds_id}/progress").json()
    assert progress["total"] == 12 and progress["pending"] == 12 and progress["completed"] == 0
    with rest(argilla_server, world["users"]["s2"]["api_key"]) as client:
        mine = client.get(f"/api/v1/me/datasets/{ds_id}/metrics").json()["responses"]
    assert mine == {"total": 12, "submitted": 2, "discarded": 1, "draft": 0, "pending": 9}


def test_search_engine_reports_itself(argilla_server: Running) -> None:
    with rest(argilla_server) as client:
        info = client.get("/api/v1/status").json()
    assert info["search_engine"]["engine"] == "sql"
