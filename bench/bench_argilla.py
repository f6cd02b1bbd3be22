"""Benchmark: the local Argilla service and the bridge, on real data.

    .venv/bin/python bench/bench_argilla.py               # 1,000 pairs
    .venv/bin/python bench/bench_argilla.py --pairs 200   # smoke run
    .venv/bin/python bench/bench_argilla.py --repeat 3    # best of 3 for pull and search

Needs `bash annotate/setup.sh` and redis-server. Starts its own server (free port, temporary
data folder) with the project's scripts, and stops it at the end.

What is timed (time.perf_counter, wall clock):
- cold start, fresh: `prefdata.annotate.service.serve` on an empty data folder, until the
  server answers 200 (Redis, migration, owner user, server and worker processes);
- cold start, existing data: stop, then serve again on the same folder;
- push, create: `prefdata.annotate.bridge.push` of N real HH-RLHF pairs (harmless-base test, the
  first N), each with a suggestion from a simple rule judge (longer response wins, kind "rule"),
  two annotators per item: dataset creation and records with suggestions;
- push, update: the same call again (every record updated, none added);
- queue search: one annotator's first page of pending records, as the web UI asks for it
  (`POST /api/v1/me/datasets/{id}/records/search`, 50 records), best of `--repeat` x 5;
- responses: that annotator submits a label for all N records (`/api/v1/me/responses/bulk`,
  100 per call; untimed setup for the pull, its time is shown for information);
- pull: `prefdata.annotate.bridge.pull` of the N responses into the annotations table, best of
  `--repeat`.

Baselines: the figures of the probe that first ran argilla-server 2.8.0 here with the
stock SDK (../shared/argilla-notes.md, midpoints of its ranges): cold start 8 s, fresh
database to ready 24 s, logging 1,000 records with suggestions through the SDK 16.5 s, reading
back 1,000 records with responses 1.5 s, queue search over 1,000 records 0.0825 s. Ratios are
ours / probe (below 1 = faster). Figures are printed and written as JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefdata.annotate import bridge as pa
from prefdata.annotate import service as annotate_service
from prefdata.io.importers.hh_rlhf import import_hh_rlhf

OUT_DIR = Path(__file__).resolve().parent / "out"
DATA = Path(
    os.environ.get("PREFDATA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
PROBE = {  # seconds, from ../shared/argilla-notes.md (midpoints)
    "cold_start_existing_s": 8.0,
    "cold_start_fresh_s": 24.0,
    "push_create_s": 16.5,
    "pull_s": 1.5,
    "queue_search_s": 0.0825,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rule_votes(pairs: pl.DataFrame) -> pl.DataFrame:
    """A rule judge's vote per pair: the longer response wins (canonical a / b)."""
    from prefdata import ids

    rows = []
    for row in pairs.iter_rows(named=True):
        a, b = ids.canonical_sides(row["chosen"], row["rejected"])
        label = "a" if len(a) > len(b) else "b" if len(b) > len(a) else "tie"
        rows.append(
            {
                "item_id": row["pair_id"],
                "annotator": "longer-wins",
                "annotator_kind": "rule",
                "label": label,
                "confidence": 0.6,
            }
        )
    return pl.DataFrame(rows)


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not annotate_service.is_installed():
        sys.exit("the annotation server is not set up: run `bash annotate/setup.sh` first")

    pairs = import_hh_rlhf(DATA / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    pairs = pairs.head(args.pairs)
    votes = _rule_votes(pairs)
    n = pairs.height
    figures: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(prefix="bench-argilla-") as tmp:
        data = Path(tmp) / "data"
        port = _free_port()
        info, figures["cold_start_fresh_s"] = _timed(
            lambda: annotate_service.serve(port=port, data=data)
        )
        try:
            annotate_service.stop(data=data)
            info, figures["cold_start_existing_s"] = _timed(
                lambda: annotate_service.serve(port=port, data=data)
            )
            auth = {"url": info["url"], "api_key": info["api_key"]}
            annotator = pa.add_user("bench-annotator", workspaces=["argilla"], **auth)

            report, figures["push_create_s"] = _timed(
                lambda: pa.push(
                    pairs, dataset="bench", suggestions=votes, annotators_per_item=2, **auth
                )
            )
            assert report["created"] == n and report["suggestions"] > 0.9 * n, report
            again, figures["push_update_s"] = _timed(
                lambda: pa.push(
                    pairs, dataset="bench", suggestions=votes, annotators_per_item=2, **auth
                )
            )
            assert (again["created"], again["updated"]) == (0, n), again
            figures["suggestions"] = report["suggestions"]

            headers = {"X-Argilla-Api-Key": annotator["api_key"]}
            with httpx.Client(base_url=info["url"], headers=headers, timeout=120) as client:
                query = {
                    "filters": {
                        "and": [
                            {
                                "type": "terms",
                                "scope": {"entity": "response", "property": "status"},
                                "values": ["pending"],
                            }
                        ]
                    }
                }
                path = f"/api/v1/me/datasets/{report['dataset_id']}/records/search"
                searches = []
                for _ in range(args.repeat * 5):
                    resp, dt = _timed(lambda: client.post(path, json=query, params={"limit": 50}))
                    assert resp.status_code == 200 and resp.json()["total"] == n
                    searches.append(dt)
                figures["queue_search_s"] = min(searches)

                # Every record id, for the responses.
                record_ids = []
                owner = {"X-Argilla-Api-Key": info["api_key"]}
                for offset in range(0, n, 1000):
                    page = client.get(
                        f"/api/v1/datasets/{report['dataset_id']}/records",
                        params={"offset": offset, "limit": 1000},
                        headers=owner,
                    ).json()
                    record_ids += [r["id"] for r in page["items"]]
                t0 = time.perf_counter()
                for start in range(0, n, 100):
                    items = [
                        {
                            "record_id": rid,
                            "values": {"label": {"value": "a"}},
                            "status": "submitted",
                        }
                        for rid in record_ids[start : start + 100]
                    ]
                    resp = client.post("/api/v1/me/responses/bulk", json={"items": items})
                    assert resp.status_code == 200, resp.text
                    assert all(item.get("error") is None for item in resp.json()["items"])
                figures["submit_responses_s"] = time.perf_counter() - t0

            pulls = []
            for _ in range(args.repeat):
                (table, rep), dt = _timed(lambda: pa.pull("bench", **auth))
                assert table.height == n and rep["submitted"] == n, rep
                pulls.append(dt)
            figures["pull_s"] = min(pulls)
            with httpx.Client(base_url=info["url"], timeout=30) as client:
                figures["server_rss"] = client.get("/api/v1/status").json()["memory"]["rss"]
        finally:
            annotate_service.stop(data=data)

    ratios = {k: figures[k] / PROBE[k] for k in PROBE if k in figures}
    print(f"Argilla service and bridge, {n} real HH-RLHF pairs (machine: {platform.node()})")
    rows = [
        ("cold start, fresh data folder", "cold_start_fresh_s"),
        ("cold start, existing data", "cold_start_existing_s"),
        (f"push {n} pairs + suggestions (create)", "push_create_s"),
        (f"push {n} pairs again (update)", "push_update_s"),
        ("annotator queue search (50 of all)", "queue_search_s"),
        (f"submit {n} responses (REST bulk)", "submit_responses_s"),
        (f"pull {n} responses", "pull_s"),
    ]
    for label, key in rows:
        ratio = f"  x{ratios[key]:.2f} of the probe" if key in ratios else ""
        print(f"  {label:42s} {figures[key]:8.2f} s{ratio}")
    print(f"  server memory (RSS)                        {figures['server_rss']}")
    OUT_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = OUT_DIR / f"bench_argilla-{n}-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "pairs": n,
                "figures": figures,
                "probe": PROBE,
                "ratio_to_probe": ratios,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "date": stamp,
            },
            indent=2,
        )
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
