"""Helpers for the Argilla tests: the running server, and REST calls as the web UI makes them."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class Running:
    url: str
    api_key: str
    password: str
    data: Path
    port: int
    start_seconds: float

    @property
    def auth(self) -> dict[str, str]:
        return {"url": self.url, "api_key": self.api_key}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rest(server: Running, api_key: str | None = None) -> httpx.Client:
    """An HTTP client for the server's REST API with one user's key (the owner's by default)."""
    return httpx.Client(
        base_url=server.url,
        headers={"X-Argilla-Api-Key": api_key or server.api_key},
        timeout=60,
    )


def my_queue(client: httpx.Client, dataset_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The records waiting for this user, as the web UI asks for them."""
    query = {
        "filters": {
            "and": [
                {
                    "type": "terms",
                    "scope": {"entity": "response", "property": "status"},
                    "values": ["pending"],
                },
                {
                    "type": "terms",
                    "scope": {"entity": "record", "property": "status"},
                    "values": ["pending"],
                },
            ]
        }
    }
    resp = client.post(
        f"/api/v1/me/datasets/{dataset_id}/records/search",
        params={"include": ["suggestions"], "limit": limit},
        json=query,
    )
    resp.raise_for_status()
    return [item["record"] for item in resp.json()["items"]]


def respond(
    client: httpx.Client, record_id: str, values: dict[str, Any], status: str = "submitted"
) -> dict[str, Any]:
    body = {"values": {k: {"value": v} for k, v in values.items()}, "status": status}
    resp = client.post(f"/api/v1/records/{record_id}/responses", json=body)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def pull_table(dataset: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """(the pulled annotations, the pull's report) of a dataset."""
    from prefdata.annotate import bridge as pa

    result = pa.pull(dataset=dataset, **kwargs)
    return result.main, result.report


def push_report(table: Any, **kwargs: Any) -> dict[str, Any]:
    """The report of a push."""
    from prefdata.annotate import bridge as pa

    report: dict[str, Any] = pa.push(table, **kwargs).report
    return report
