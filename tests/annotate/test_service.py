"""The local service's scripts: status, idempotent start, clear refusals, restart keeps data."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from prefdata.annotate import service as annotate_service
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running, pull_table, push_report, rest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]
SERVICE = annotate_service.annotate_dir() / "service.py"


def test_status_reports_the_running_service(argilla_server: Running) -> None:
    info = annotate_service.status(data=argilla_server.data)
    assert info["running"] and info["healthy"]
    assert info["url"] == argilla_server.url and info["port"] == argilla_server.port
    assert info["username"] == "argilla" and info["api_key"] == argilla_server.api_key
    assert all(info["components"][c]["pid"] for c in ("server", "worker", "redis"))
    creds = argilla_server.data / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    # The owner can sign in with the printed password (the web UI's login call).
    with rest(argilla_server) as client:
        resp = client.post(
            "/api/v1/token",
            data={"username": "argilla", "password": argilla_server.password},
        )
    assert resp.status_code == 201 and resp.json()["access_token"]
    # The shell wrapper's exit code says running (0).
    rc = subprocess.run(
        ["bash", str(SERVICE.parent / "status.sh"), "--data-dir", str(argilla_server.data)],
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0 and argilla_server.url in rc.stdout


def test_secrets_are_private_and_printed_only_when_asked(argilla_server: Running) -> None:
    from typer.testing import CliRunner

    from prefdata.cli import app

    secrets = (argilla_server.api_key, argilla_server.password)
    # The database holds every user's API key: the data folder is the owner's alone.
    assert argilla_server.data.stat().st_mode & 0o777 == 0o700
    database = argilla_server.data / "argilla" / "argilla.db"
    assert database.stat().st_mode & 0o777 == 0o600
    script = ["bash", str(SERVICE.parent / "status.sh"), "--data-dir", str(argilla_server.data)]
    quiet = subprocess.run(script, capture_output=True, text=True)
    assert quiet.returncode == 0 and not any(s in quiet.stdout for s in secrets)
    assert "credentials.json" in quiet.stdout
    shown = subprocess.run([*script, "--show-secrets"], capture_output=True, text=True)
    assert all(s in shown.stdout for s in secrets)
    runner = CliRunner()
    quiet_cli = runner.invoke(app, ["annotate", "status", "--data-dir", str(argilla_server.data)])
    assert quiet_cli.exit_code == 0, quiet_cli.output
    assert not any(s in quiet_cli.output for s in secrets) and "--show-secrets" in quiet_cli.output
    loud = ["annotate", "status", "--data-dir", str(argilla_server.data), "--show-secrets"]
    assert all(s in runner.invoke(app, loud).output for s in secrets)


def test_start_is_idempotent_and_refuses_clearly(argilla_server: Running, tmp_path: Path) -> None:
    again = annotate_service.serve(port=argilla_server.port, data=argilla_server.data)
    assert again["started"] is False and again["api_key"] == argilla_server.api_key
    with pytest.raises(annotate_service.ServiceError, match="already runs on port"):
        annotate_service.serve(port=argilla_server.port + 1, data=argilla_server.data)
    with pytest.raises(annotate_service.ServiceError, match="in use by another program"):
        annotate_service.serve(port=argilla_server.port, data=tmp_path / "other")
    assert not (tmp_path / "other" / "run").exists()  # nothing was started for it


def test_restart_keeps_data_and_credentials(argilla_server: Running, pandalm30: PandaLM) -> None:
    push_report(pandalm30.pairs.head(2), dataset="survives", **argilla_server.auth)
    pids = annotate_service.status(data=argilla_server.data)["components"]
    stopped = annotate_service.stop(data=argilla_server.data)
    assert stopped["stopped"] == ["server", "worker", "redis"]
    for pid in (pids[c]["pid"] for c in ("server", "worker", "redis")):
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    down = annotate_service.status(data=argilla_server.data)
    assert not down["running"] and down["components"]["server"]["pid"] is None
    with socket.socket() as s:  # the port is free again (as a server binds it)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", argilla_server.port))
    assert annotate_service.stop(data=argilla_server.data)["stopped"] == []
    rc = subprocess.run(
        [sys.executable, str(SERVICE), "status", "--data-dir", str(argilla_server.data)],
        capture_output=True,
    )
    assert rc.returncode == 3
    # A data folder left readable by an older version is made private again on start.
    argilla_server.data.chmod(0o755)
    (argilla_server.data / "argilla" / "argilla.db").chmod(0o644)

    back = annotate_service.serve(port=argilla_server.port, data=argilla_server.data)
    assert argilla_server.data.stat().st_mode & 0o777 == 0o700
    assert (argilla_server.data / "argilla" / "argilla.db").stat().st_mode & 0o777 == 0o600
    assert back["started"] is True and back["api_key"] == argilla_server.api_key
    assert back["start_seconds"] > 0  # reported; how fast is bench/'s to measure, not a test's
    pulled, report = pull_table("survives", **argilla_server.auth)
    assert report["records"] == 2 and pulled.height == 0
    assert isinstance(pulled, pl.DataFrame)


def _is_zombie(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
