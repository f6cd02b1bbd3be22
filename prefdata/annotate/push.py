"""Push pairs, candidates or an audit sample to Argilla as records (the stage `annotate-push`).

What a record shows is in prefdata.annotate.records. Every record's `external_id` is its item
id (the pair id, the prompt id for a ranking), so a second push of the same data updates the
records instead of duplicating them, and never changes what annotators saw: a push that would
show an existing record in another order (another `seed`) is refused before anything is
written, since the answers already given refer to the order that was shown.
`annotators_per_item=k` sets Argilla's TaskDistribution(min_submitted=k): a record leaves the
annotators' queue once k of them submitted it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import polars as pl

from prefdata.annotate.connection import (
    ArgillaError,
    Connection,
    connection,
    dataset_kind,
    default_workspace,
    ensure_workspace,
    field_names,
    find_dataset,
    httpx_module,
    iter_records,
    sdk_module,
    unreachable,
    workspace_ids,
)
from prefdata.annotate.records import (
    JUDGE_FIELD,
    Batch,
    SuggestionMode,
    Verdict,
    annotator_guidelines,
    candidate_records,
    dataset_settings,
    judge_suggestions,
    pair_records,
    review_records,
    sdk_record,
)
from prefdata.annotate.records import guidelines as guidelines_of
from prefdata.errors import ContractError, PrefdataError
from prefdata.io.tables import read_text
from prefdata.schema import require_columns, with_messages
from prefdata.stage import File, StageResult, Table, stage

PUSH_BATCH = 256


@stage("annotate-push", outputs=(), external=True)
def push(
    pairs: Annotated[
        pl.DataFrame,
        Table(
            "pairs",
            "candidates",
            needs={
                "pairs": ("prompt", "chosen", "rejected"),
                "candidates": ("prompt", "completion"),
            },
        ),
    ],
    *,
    dataset: str,
    workspace: str | None = None,
    annotators_per_item: int = 1,
    judge_votes: Annotated[pl.DataFrame | None, Table("annotations", rows=False)] = None,
    suggestions: SuggestionMode = "hint",
    guidelines: Annotated[Path | None, File()] = None,
    rating: bool = False,
    review: bool = False,
    seed: int = 0,
    url: str | None = None,
    api_key: str | None = None,
) -> StageResult:
    """Push pairs as Argilla records for people to label (the shown order is random per
    record; a re-push updates the records, never duplicates them or changes their order).

    Creates the dataset (and the workspace) when missing. An existing dataset must have been
    made for the same kind of data and the same way of showing the judges; its records are
    updated in place (matched on their item id), and its distribution and guidelines are set
    to the ones asked for (reported in `settings_updated`). `rating` adds the optional
    strength question to a new dataset only. Report: `url`, `dataset`, `workspace`,
    `dataset_id`, `kind`, `records` (pushed), `created`, `updated`, `verdicts` (records
    that show a judges' verdict), `suggestions` (the mode), `annotators_per_item`,
    `annotators_in_workspace`, and skip counts.

    Example: prefdata annotate push pairs.parquet --dataset round1 --annotators-per-item 3
    --judge-votes judge.parquet

    Args:
        pairs: pairs (prompt, chosen, rejected), candidates (prompt, completion; grouped by
            prompt), or an audit sample with review=True
        dataset: the Argilla dataset name
        workspace: the Argilla workspace (default: the server's only one)
        annotators_per_item: answers each record needs before it leaves the queue
        judge_votes: LLM-judge votes (annotations) whose verdict each pair shows
        suggestions: how the judges' verdict is shown: "hint" (a field below the
            responses, nothing selected) or "prefill" (an Argilla suggestion, pre-selected)
        guidelines: a Markdown file of annotator guidelines (default: prefdata's)
        rating: add an optional preference-strength question (1-5)
        review: push an audit sample for review ("is this label right?")
        seed: seed of the shown order (keep it for every push to a dataset)
        url: the Argilla server (default: $ARGILLA_API_URL or the local service)
        api_key: an owner or admin API key (default: $ARGILLA_API_KEY or the local service)
    """
    if annotators_per_item < 1:
        raise ArgillaError("annotators_per_item must be at least 1")
    batch = _batch(pairs, review=review, seed=seed)
    custom = read_text(guidelines) if guidelines is not None else None
    verdicts: dict[str, Verdict] = {}
    report: dict[str, Any] = {"kind": batch.kind, **batch.report}
    if judge_votes is not None:
        if batch.kind != "pairs":
            raise ArgillaError("judge verdicts are shown on pair datasets only")
        verdicts, counts = judge_suggestions(judge_votes)
        pushed = {r["id"] for r in batch.records}
        report["judge_votes"] = counts
        report["judged_items_not_pushed"] = len(set(verdicts) - pushed)

    with connection(url, api_key) as conn:
        rg = sdk_module()
        client = conn.sdk()
        existing = find_dataset(conn, dataset, workspace)
        if existing is None:
            ws_name = workspace or default_workspace(conn)
            ws = ensure_workspace(conn, ws_name)
            text = annotator_guidelines(
                batch.kind,
                k=annotators_per_item,
                records=len(batch.records),
                suggestions=suggestions,
                custom=custom,
            )
            settings = dataset_settings(
                rg,
                batch,
                annotators_per_item,
                rating=rating,
                text=text,
                suggestions=suggestions,
            )
            ds = sdk_call(
                conn,
                "create the dataset",
                lambda: rg.Dataset(
                    name=dataset, workspace=ws_name, settings=settings, client=client
                ).create(),
            )
            ds_id = str(ds.id)
            report["workspace_created"] = ws["created"]
        else:
            ws_name, ds_id = existing["workspace"], existing["id"]
            _check_existing(conn, existing, batch, suggestions, shows_verdicts=bool(verdicts))
            ds = sdk_call(
                conn, "open the dataset", lambda: client.datasets(name=dataset, workspace=ws_name)
            )
        questions = {
            q["name"] for q in conn.request("GET", f"/api/v1/datasets/{ds_id}/questions")["items"]
        }
        records = [sdk_record(rg, r, verdicts, questions, suggestions) for r in batch.records]
        before = _record_count(conn, ds_id)
        for start in range(0, len(records), PUSH_BATCH):
            chunk = records[start : start + PUSH_BATCH]
            sdk_call(conn, "log records", lambda chunk=chunk: _upsert(client, ds, chunk))
        created = _record_count(conn, ds_id) - before
        if existing is not None:
            text = annotator_guidelines(
                batch.kind,
                k=annotators_per_item,
                records=before + created,
                suggestions=suggestions,
                custom=custom,
            )
            # Guidelines someone edited on the server stay, unless new ones are given.
            ours = custom is not None or str(existing.get("guidelines") or "").startswith(
                guidelines_of(batch.kind)
            )
            report["settings_updated"] = _update_settings(
                conn, existing, annotators_per_item, text if ours else None
            )
        members = conn.request("GET", f"/api/v1/workspaces/{workspace_ids(conn)[ws_name]}/users")[
            "items"
        ]
    report.update(
        {
            "url": conn.server.url,
            "dataset": dataset,
            "dataset_id": ds_id,
            "workspace": ws_name,
            "records": len(records),
            "created": created,
            "updated": len(records) - created,
            "suggestions": suggestions,
            "verdicts": sum(
                1 for r in batch.records if verdicts.get(r["id"]) and verdicts[r["id"]].label
            ),
            "annotators_per_item": annotators_per_item,
            "annotators_in_workspace": sum(1 for m in members if m["role"] == "annotator"),
        }
    )
    return StageResult(report=report)


def _batch(table: pl.DataFrame, *, review: bool, seed: int) -> Batch:
    """The records of a table: an audit sample, pairs, or candidates (see the module doc)."""
    table = with_messages(table) if "prompt" in table.columns else table
    if review:
        require_columns(table.columns, ("prompt", "chosen", "rejected"), "an audit sample needs")
        batch = review_records(table)
    elif {"prompt", "chosen", "rejected"} <= set(table.columns):
        batch = pair_records(table, seed)
    elif {"prompt", "completion"} <= set(table.columns):
        batch = candidate_records(table, seed)
    else:
        raise ContractError(
            "push needs pairs (prompt, chosen, rejected) or candidates (prompt, completion); "
            f"the table has {table.columns}",
            column="chosen",
        )
    if not batch.records:
        raise ArgillaError(f"nothing to push: {batch.report}")
    return batch


def _check_existing(
    conn: Connection,
    ds: dict[str, Any],
    batch: Batch,
    suggestions: SuggestionMode,
    *,
    shows_verdicts: bool,
) -> None:
    """Refuse a push that does not fit the dataset already there (before any write): another
    kind of data, another way of showing the judges, or another shown order of a record."""
    name = ds["name"]
    kind = dataset_kind(conn, ds["id"])
    if kind != batch.kind:
        raise ArgillaError(
            f"dataset '{name}' holds {kind} records, not {batch.kind}: push to another "
            "--dataset name"
        )
    if kind == "pairs" and shows_verdicts:
        has_field = JUDGE_FIELD in field_names(conn, ds["id"])
        made_as = "hint" if has_field else "prefill"
        if made_as != suggestions:
            raise ArgillaError(
                f"dataset '{name}' shows the judges' verdict as '{made_as}' (it was created "
                f"that way), not '{suggestions}': push with --suggestions {made_as}, or to "
                "another --dataset name"
            )
    changed = _order_changes(conn, ds["id"], batch)
    if changed:
        raise ArgillaError(
            f"{changed} record(s) of dataset '{name}' would be shown in another order than "
            "the one their annotators saw (a different --seed?); the answers already given "
            "refer to the shown order, so nothing was pushed. Push with the seed the dataset "
            "was made with (default 0), or to another --dataset name"
        )


def _order_changes(conn: Connection, dataset_id: str, batch: Batch) -> int:
    """How many of the batch's records exist with another shown order."""
    key = {"pairs": "order", "ranking": "completion_ids"}.get(batch.kind)
    if key is None:  # a review shows chosen and rejected as labelled: no order to keep
        return 0
    new = {r["id"]: r["metadata"][key] for r in batch.records}
    changed = 0
    for rec in iter_records(conn, dataset_id, include=None):
        external = rec.get("external_id")
        if external in new and (rec.get("metadata") or {}).get(key) != new[external]:
            changed += 1
    return changed


def _update_settings(conn: Connection, ds: dict[str, Any], k: int, text: str | None) -> list[str]:
    """Bring an existing dataset's distribution (and guidelines, unless None) up to date."""
    change: dict[str, Any] = {}
    if (ds.get("distribution") or {}).get("min_submitted") != k:
        # The server's worker then recomputes every record's status.
        change["distribution"] = {"strategy": "overlap", "min_submitted": k}
    if text is not None and ds.get("guidelines") != text:
        change["guidelines"] = text
    if change:
        conn.request("PATCH", f"/api/v1/datasets/{ds['id']}", json=change)
    return sorted(change)


def _record_count(conn: Connection, dataset_id: str) -> int:
    page = conn.request("GET", f"/api/v1/datasets/{dataset_id}/records", params={"limit": 1})
    return int(page.get("total") or 0)


def _upsert(client: Any, ds: Any, records: list[Any]) -> None:
    """Create or update records, matched on their external id.

    Not the SDK's public `records.log`, which draws a progress bar on every call. (Neither
    says how many records were updated: argilla-server 2.8's response model drops
    `updated_item_ids`, so push counts the records before and after.)
    """
    models = []
    for record in records:
        record.dataset = ds  # binds suggestion question names to the dataset's question ids
        models.append(record.api_model())
    client.api.records.bulk_upsert(dataset_id=ds.id, records=models)


def sdk_call(conn: Connection, what: str, func: Any) -> Any:
    """Run one SDK call; its failures become ArgillaError naming what was being done."""
    httpx = httpx_module()
    try:
        return func()
    except httpx.TransportError as exc:
        raise unreachable(conn.server, exc) from None
    except PrefdataError:
        raise
    except Exception as exc:
        raise ArgillaError(f"could not {what} on {conn.server.url}: {exc}") from None
