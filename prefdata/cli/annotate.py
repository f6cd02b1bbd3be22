"""`prefdata annotate ...`: control of the local Argilla service, users and workspaces.

Parse, call one function of prefdata.annotate.service or prefdata.annotate.connection, print.
No logic. `annotate push` and `annotate pull` are derived from their stage functions
(prefdata.annotate.push / pull) and added to this group by prefdata.cli.app.
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
ShowSecrets = Annotated[
    bool, typer.Option("--show-secrets", help="print the owner's password and API key")
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
    show_secrets: ShowSecrets = False,
) -> None:
    """Start the local Argilla server (SQLite + Redis) and print its URL; the owner's
    password and API key only with --show-secrets (prefdata finds them by itself).

    Example: prefdata annotate serve --port 6900
    """
    from prefdata.annotate import service as annotate_service

    info = annotate_service.serve(port=port, host=host, data=data_dir, timeout=timeout)
    print_report(annotate_service.shown(info, secrets=show_secrets))
    if not info.get("started", True):
        console.print("already running")
    if show_secrets:
        console.print(
            f"export ARGILLA_API_URL={info['url']} ARGILLA_API_KEY={info['api_key']}",
            highlight=False,
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
def status(data_dir: DataDir = None, show_secrets: ShowSecrets = False) -> None:
    """Whether the local server runs (exit code 3 when it does not); the owner's password
    and API key only with --show-secrets.

    Example: prefdata annotate status
    """
    from prefdata.annotate import service as annotate_service

    info = annotate_service.status(data=data_dir)
    print_report(annotate_service.shown(info, secrets=show_secrets))
    if not info.get("running"):
        raise typer.Exit(3)


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
