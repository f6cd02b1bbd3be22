"""`prefdata annotate ...`: the local Argilla service and the push / pull bridge.

Parse, call one function of prefdata.annotate.service or prefdata.annotate.bridge, print. No logic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefdata.cli.common import console, friendly_errors, print_report

annotate_app = typer.Typer(
    help="Human annotation in Argilla: a local server, and push pairs / pull responses. "
    "Point at any other Argilla server with ARGILLA_API_URL and ARGILLA_API_KEY.",
    no_args_is_help=True,
)
users_app = typer.Typer(help="Argilla users.", no_args_is_help=True)
workspaces_app = typer.Typer(help="Argilla workspaces.", no_args_is_help=True)
annotate_app.add_typer(users_app, name="users")
annotate_app.add_typer(workspaces_app, name="workspaces")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="server data folder (default annotate/data)")
]
Url = Annotated[str | None, typer.Option(help="Argilla URL (default: $ARGILLA_API_URL or local)")]
ApiKey = Annotated[str | None, typer.Option(help="API key (default: $ARGILLA_API_KEY or local)")]


@annotate_app.command()
@friendly_errors
def setup() -> None:
    """Create the annotation server's own virtual environment (annotate/.venv).

    Example: prefdata annotate setup
    """
    from prefdata.annotate import service as annotate_service

    annotate_service.setup()


@annotate_app.command()
@friendly_errors
def serve(
    port: Annotated[int, typer.Option(help="port")] = 6900,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the server")] = 120.0,
) -> None:
    """Start the local Argilla server (SQLite + Redis) and print the URL and credentials.

    Example: prefdata annotate serve --port 6900
    """
    from prefdata.annotate import service as annotate_service

    info = annotate_service.serve(port=port, host=host, data=data_dir, timeout=timeout)
    print_report(info)
    if not info.get("started", True):
        console.print("already running")
    console.print(
        f"export ARGILLA_API_URL={info['url']} ARGILLA_API_KEY={info['api_key']}", highlight=False
    )


@annotate_app.command()
@friendly_errors
def stop(data_dir: DataDir = None) -> None:
    """Stop the local server, its worker and its Redis.

    Example: prefdata annotate stop
    """
    from prefdata.annotate import service as annotate_service

    print_report(annotate_service.stop(data=data_dir))


@annotate_app.command()
@friendly_errors
def status(data_dir: DataDir = None) -> None:
    """Whether the local server runs (exit code 3 when it does not).

    Example: prefdata annotate status
    """
    from prefdata.annotate import service as annotate_service

    info = annotate_service.status(data=data_dir)
    print_report(info)
    if not info.get("running"):
        raise typer.Exit(3)


@annotate_app.command()
@friendly_errors
def push(
    data: Annotated[Path, typer.Argument(help="pairs (or candidates, or an audit sample)")],
    dataset: Annotated[str, typer.Option(help="Argilla dataset name")],
    workspace: Annotated[str | None, typer.Option()] = None,
    annotators_per_item: Annotated[int, typer.Option(help="responses needed per record")] = 1,
    suggestions: Annotated[Path | None, typer.Option(help="LLM-judge votes to suggest")] = None,
    guidelines: Annotated[Path | None, typer.Option(help="Markdown guidelines file")] = None,
    rating: Annotated[bool, typer.Option(help="add a preference-strength rating")] = False,
    review: Annotated[bool, typer.Option(help="push an audit sample for review")] = False,
    seed: Annotated[int, typer.Option(help="seed of the shown order")] = 0,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Push pairs as records (order randomised per record; re-push updates, never duplicates).

    Example: prefdata annotate push pairs.parquet --dataset round1 --annotators-per-item 3
    --suggestions judge.parquet
    """
    from prefdata.annotate import bridge as argilla
    from prefdata.io.tables import read_table, read_text
    from prefdata.schema import validate

    table = read_table(data)
    if "completion" in table.columns and "chosen" not in table.columns:
        table = validate(table, "candidates", source=data, needs=("prompt", "completion"))
    else:
        table = validate(table, "pairs", source=data, needs=("prompt", "chosen", "rejected"))
    print_report(
        argilla.push(
            table,
            dataset=dataset,
            workspace=workspace,
            annotators_per_item=annotators_per_item,
            suggestions=read_table(suggestions) if suggestions else None,
            guidelines=read_text(guidelines) if guidelines else None,
            rating=rating,
            review=review,
            seed=seed,
            url=url,
            api_key=api_key,
        )
    )


@annotate_app.command()
@friendly_errors
def pull(
    dataset: Annotated[str, typer.Option(help="Argilla dataset name")],
    out: Annotated[Path, typer.Option("-o", "--out", help="annotations table")],
    workspace: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="only responses after this time")] = None,
    review_of: Annotated[
        Path | None, typer.Option(help="the audit sample pushed with --review")
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Pull submitted (and discarded) responses as the annotations table; with --review-of,
    the reviewed audit sample for `prefdata audit-rate`.

    Example: prefdata annotate pull --dataset round1 -o votes.parquet
    """
    from prefdata.annotate import bridge as argilla
    from prefdata.io.tables import check_outputs, read_table, write_table

    check_outputs([out], inputs=[review_of])
    if review_of is not None:
        table, report = argilla.pull_review(
            read_table(review_of), dataset=dataset, workspace=workspace, url=url, api_key=api_key
        )
    else:
        table, report = argilla.pull(
            dataset, workspace=workspace, since=since, url=url, api_key=api_key
        )
    write_table(table, out)
    print_report({**report, "written": str(out)})


@users_app.command("add")
@friendly_errors
def users_add(
    name: Annotated[str, typer.Argument(help="username")],
    role: Annotated[str, typer.Option(help="annotator | admin | owner")] = "annotator",
    password: Annotated[str | None, typer.Option(help="default: generated")] = None,
    workspace: Annotated[list[str] | None, typer.Option(help="workspaces to join")] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Create a user (printing its password and API key) and add it to workspaces.

    Example: prefdata annotate users add alice --role annotator --workspace prefdata
    """
    from prefdata.annotate import bridge as argilla
    from prefdata.cli.common import pick

    print_report(
        argilla.add_user(
            name,
            role=pick("role", role, ("annotator", "admin", "owner")),
            password=password,
            workspaces=workspace,
            url=url,
            api_key=api_key,
        )
    )


@users_app.command("list")
@friendly_errors
def users_list(url: Url = None, api_key: ApiKey = None) -> None:
    """List users.

    Example: prefdata annotate users list
    """
    from prefdata.annotate import bridge as argilla

    print_report({"users": argilla.list_users(url=url, api_key=api_key)})


@workspaces_app.command("add")
@friendly_errors
def workspaces_add(
    name: Annotated[str, typer.Argument(help="workspace name")],
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Create a workspace.

    Example: prefdata annotate workspaces add round1
    """
    from prefdata.annotate import bridge as argilla

    print_report({"workspace": argilla.add_workspace(name, url=url, api_key=api_key)})


@workspaces_app.command("list")
@friendly_errors
def workspaces_list(url: Url = None, api_key: ApiKey = None) -> None:
    """List workspaces.

    Example: prefdata annotate workspaces list
    """
    from prefdata.annotate import bridge as argilla

    print_report({"workspaces": argilla.list_workspaces(url=url, api_key=api_key)})
