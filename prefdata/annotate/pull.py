"""Pull the annotators' responses back from Argilla (the stage `annotate-pull`).

The annotations contract, one row per response:
- `item_id` = the record's external id (pair id; completion id for rankings), `annotator`
  = the Argilla username, `annotator_kind` = "human", `label` = a / b / tie in canonical
  terms (the shown order undone), the rank as text for rankings ("1" = best), yes / no /
  unsure for reviews; `rationale`; `order` = what was shown ("ab" / "ba"; null for
  rankings); `raw` = the response values as JSON; `created_at` = when the response was last
  changed (UTC, ISO 8601); `record_id` = the record's external id (the prompt id for
  rankings, so one annotator's ranks group together); extra columns `status`
  (submitted / discarded) and `strength` (Int64, null unless asked).
- a discarded response stays a row: `label` null, `error` "discarded by the annotator",
  `status` "discarded" (agreement and consensus skip rows with an error).
- drafts are not final and are left out (counted in the report).
- `since`: only responses changed after that time; the report's `latest` is the value to
  pass next time for an incremental pull. An answer an annotator changed comes again with
  its new value: when appending pulls, keep the latest row per (item_id, annotator).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any

import polars as pl

from prefdata import ids
from prefdata.annotate.connection import (
    LABEL,
    RANKING,
    REVIEW,
    ArgillaError,
    Kind,
    connection,
    dataset_kind,
    iter_records,
    require_dataset,
    server_users,
)
from prefdata.annotate.records import DISCARDED, RATIONALE, STRENGTH, swap
from prefdata.errors import PrefdataError
from prefdata.schema import conform, with_messages
from prefdata.stage import StageResult, Table, stage


def _parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ArgillaError(
                f"cannot read time '{value}': use ISO 8601, e.g. 2025-03-01T12:00:00Z "
                "(the `latest` of the previous pull)"
            ) from None
    # The server's times are UTC without a zone.
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


ANNOTATION_SCHEMA: dict[str, Any] = {
    "item_id": pl.String,
    "annotator": pl.String,
    "annotator_kind": pl.String,
    "label": pl.String,
    "rationale": pl.String,
    "raw": pl.String,
    "error": pl.String,
    "order": pl.String,
    "created_at": pl.String,
    "record_id": pl.String,
    "status": pl.String,
    "strength": pl.Int64,
}


class WaitingForAnnotations(PrefdataError):
    """Records were pushed but too few responses have come back yet: annotate, then re-run."""


@stage("annotate-pull", outputs=("annotations", "sample"), external=True)
def pull(
    *,
    dataset: str,
    workspace: str | None = None,
    since: str | None = None,
    review_of: Annotated[pl.DataFrame | None, Table(auto=False)] = None,
    min_responses: int = 0,
    url: str | None = None,
    api_key: str | None = None,
) -> StageResult:
    """Pull the submitted (and discarded) responses of an Argilla dataset as the annotations
    table; with `review_of`, the reviewed audit sample for `prefdata audit-rate` instead.

    Needs an owner or admin key (annotators may not list other people's responses). Output:
    the table `annotations` (see the module doc for its columns), or with `review_of` the
    table `sample`. Report: `records`, `submitted`, `discarded`, `drafts_skipped`,
    `older_than_since`, `annotators`, `by_annotator` (submitted and discarded per
    annotator), `since`, `latest` (pass it as `since` next time).

    Example: prefdata annotate pull --dataset round1 -o votes.parquet

    Args:
        dataset: the Argilla dataset name
        workspace: the Argilla workspace (when the name is in several)
        since: only responses changed after this time (ISO 8601; the `latest` of the last pull)
        review_of: the audit sample pushed with review=True: fill its `mislabeled` column
        min_responses: fail, saying where to annotate, while fewer responses are in
        url: the Argilla server (default: $ARGILLA_API_URL or the local service)
        api_key: an owner or admin API key (default: $ARGILLA_API_KEY or the local service)
    """
    table, report = _responses(dataset, workspace=workspace, since=since, url=url, api_key=api_key)
    if table.height < min_responses:
        raise WaitingForAnnotations(
            f"{report['records']} records are in Argilla dataset '{dataset}' at "
            f"{report['url']}, with {table.height} responses so far (this needs "
            f"{min_responses}); annotate them, then run again"
        )
    if review_of is not None:
        reviewed = _reviewed(review_of, table, report, dataset)
        return StageResult(tables={"sample": reviewed}, report=report)
    return StageResult(tables={"annotations": table}, report=report)


def _responses(
    dataset: str,
    *,
    workspace: str | None,
    since: str | datetime | None,
    url: str | None,
    api_key: str | None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Submitted and discarded responses of a dataset -> (annotations, report)."""
    cutoff = _parse_time(since) if since is not None else None
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    latest: datetime | None = None
    with connection(url, api_key) as conn:
        ds = require_dataset(conn, dataset, workspace)
        kind = dataset_kind(conn, ds["id"])
        names = {u["id"]: u["username"] for u in server_users(conn)}
        for rec in iter_records(conn, ds["id"]):
            counts["records"] += 1
            for resp in rec.get("responses") or []:
                changed = _parse_time(resp["updated_at"])
                latest = changed if latest is None or changed > latest else latest
                if resp["status"] == "draft":
                    counts["drafts_skipped"] += 1
                    continue
                if cutoff is not None and changed <= cutoff:
                    counts["older_than_since"] += 1
                    continue
                counts[resp["status"]] += 1
                who = names.get(resp["user_id"], str(resp["user_id"]))
                rows.extend(response_rows(kind, rec, resp, who, _iso(changed)))
    table = pl.DataFrame(rows, schema=ANNOTATION_SCHEMA).sort("created_at", "item_id", "annotator")
    table = conform(table, "annotations")
    report = {
        "url": conn.server.url,
        "dataset": dataset,
        "workspace": ds["workspace"],
        "kind": kind,
        "records": counts["records"],
        "submitted": counts["submitted"],
        "discarded": counts["discarded"],
        "drafts_skipped": counts["drafts_skipped"],
        "older_than_since": counts["older_than_since"],
        "rows": table.height,
        "annotators": table["annotator"].n_unique(),
        "by_annotator": _by_annotator(table),
        "since": _iso(cutoff) if cutoff else None,
        "latest": _iso(latest) if latest else (_iso(cutoff) if cutoff else None),
    }
    return table, report


def _by_annotator(table: pl.DataFrame) -> dict[str, dict[str, int]]:
    """annotator -> how many responses they submitted and discarded."""
    out: dict[str, dict[str, int]] = {}
    for who, status, n in (
        table.group_by("annotator", "status").len().sort("annotator", "status").iter_rows()
    ):
        out.setdefault(who, {"submitted": 0, "discarded": 0})[status] = n
    return out


def _value(values: dict[str, Any] | None, name: str) -> Any:
    entry = (values or {}).get(name)
    return entry.get("value") if isinstance(entry, dict) else None


def response_rows(
    kind: Kind, rec: dict[str, Any], resp: dict[str, Any], who: str, when: str
) -> list[dict[str, Any]]:
    """One response of one record (as the REST API returns them) -> annotation rows.

    Undoes the shown order (metadata `order`; `completion_ids` for rankings); a discarded
    response, or one without an answer, is one row with `error` set and no label.
    """
    values = resp.get("values") or {}
    external = rec.get("external_id") or str(rec["id"])
    meta = rec.get("metadata") or {}
    base = {
        "annotator": who,
        "annotator_kind": "human",
        "rationale": _value(values, RATIONALE) or None,
        "raw": json.dumps(values, ensure_ascii=False, sort_keys=True),
        "created_at": when,
        "record_id": external,
        "status": resp["status"],
        "strength": None,
        "error": None,
        "order": None,
    }
    discarded = resp["status"] == "discarded"
    if kind == "ranking":
        shown_ids = meta.get("completion_ids") or []
        ranking = _value(values, RANKING) or []
        if discarded or not ranking:
            return [{**base, "item_id": external, "label": None, "error": DISCARDED}]
        out = []
        for entry in ranking:
            position = int(str(entry["value"]).rsplit("_", 1)[1]) - 1
            item = shown_ids[position] if position < len(shown_ids) else entry["value"]
            out.append({**base, "item_id": item, "label": str(entry["rank"])})
        return out
    if kind == "review":
        label = None if discarded else _value(values, REVIEW)
        return [
            {
                **base,
                "item_id": external,
                "label": label,
                "error": DISCARDED if label is None else None,
            }
        ]
    order = meta.get("order")
    shown = None if discarded else _value(values, LABEL)
    label = None if shown is None else (shown if order == "ab" else swap(shown))
    strength = _value(values, STRENGTH)
    return [
        {
            **base,
            "item_id": external,
            "label": label,
            "order": order,
            "strength": int(strength) if strength is not None else None,
            "error": DISCARDED if label is None else None,
        }
    ]


def _reviewed(
    sample: pl.DataFrame, votes: pl.DataFrame, report: dict[str, Any], dataset: str
) -> pl.DataFrame:
    """An audit sample's `mislabeled` column from its review dataset's votes.

    Input: the sample that was pushed with `review=True` (prompt, chosen, rejected or
    pair_id; audit_sample's `weight`). Output: the sample with `mislabeled` = True when more
    reviewers answered "no" than "yes", False when more said "yes", null when they tie, all
    said "unsure" or nobody reviewed it, plus `review_votes`, ready for
    prefdata.quality.sample.mislabel_rate; the report gets `reviewed_items` and
    `mislabeled_items`.
    """
    if report["kind"] != "review":
        raise ArgillaError(
            f"dataset '{dataset}' is not a review dataset (it holds {report['kind']})"
        )
    if "pair_id" not in sample.columns:
        sample = ids.with_pair_ids(with_messages(sample))
    tally = (
        votes.filter(pl.col("label").is_in(["yes", "no"]))
        .group_by("item_id")
        .agg(
            (pl.col("label") == "no").sum().alias("__no"),
            (pl.col("label") == "yes").sum().alias("__yes"),
        )
    )
    n_votes = votes.filter(pl.col("label").is_not_null()).group_by("item_id").len("review_votes")
    out = (
        sample.drop("mislabeled", strict=False)
        .join(tally, left_on="pair_id", right_on="item_id", how="left")
        .join(n_votes, left_on="pair_id", right_on="item_id", how="left")
        .with_columns(
            pl.when(pl.col("__no") > pl.col("__yes"))
            .then(True)
            .when(pl.col("__yes") > pl.col("__no"))
            .then(False)
            .otherwise(None)
            .alias("mislabeled"),
            pl.col("review_votes").fill_null(0).cast(pl.Int64),
        )
        .drop("__no", "__yes")
    )
    report["reviewed_items"] = int(out["mislabeled"].is_not_null().sum())
    report["mislabeled_items"] = int(out["mislabeled"].fill_null(False).sum())
    return out
