"""The local annotation service (annotate/ in the repository), driven from Python.

`prefdata annotate serve / stop / status / setup` call these functions. The service itself
lives in `annotate/`: a real Argilla server (`argilla-server==2.8.0`) in its own virtual
environment (its pins clash with prefdata's), with SQLite, a private Redis and a
search-engine plugin that answers from the server's own database. `annotate/service.py`
(standard library only) does the work; this module runs it in a subprocess and returns its
JSON answer, so a crash or a slow start of the server never takes prefdata down with it.

Where things are:
- the annotate folder: $PREFDATA_ANNOTATE_DIR, else `annotate/` beside the `prefdata`
  package (a source checkout or an editable install);
- the data folder (database, credentials, logs): `data_dir=`, else $PREFDATA_ANNOTATE_DATA,
  else `annotate/data`.

To use another Argilla server instead (an HF Space, the official Docker image), skip all of
this and set ARGILLA_API_URL and ARGILLA_API_KEY: prefdata.annotate.bridge reads them first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefdata.errors import PrefdataError
from prefdata.paths import path_or_env

DEFAULT_PORT = 6900


class ServiceError(PrefdataError):
    """The local annotation service could not do what was asked; the message says why."""


def annotate_dir() -> Path:
    """The folder holding service.py, launch.py, setup.sh and the server's venv."""
    # prefdata/annotate/service.py -> the repository root -> annotate/
    path = path_or_env(None, "PREFDATA_ANNOTATE_DIR") or (
        Path(__file__).resolve().parents[2] / "annotate"
    )
    if not (path / "service.py").is_file():
        raise ServiceError(
            f"the annotation service is not found at {path} (no service.py): it ships with the "
            "prefdata source repository; set PREFDATA_ANNOTATE_DIR to its annotate/ folder, or "
            "use another Argilla server via ARGILLA_API_URL and ARGILLA_API_KEY"
        )
    return path


def data_dir(path: str | Path | None = None) -> Path:
    """The service's data folder: `path`, $PREFDATA_ANNOTATE_DATA or annotate/data."""
    chosen = path_or_env(path, "PREFDATA_ANNOTATE_DATA")
    return chosen.resolve() if chosen is not None else annotate_dir() / "data"


def is_installed() -> bool:
    """Whether annotate/setup.sh has created the server's virtual environment."""
    try:
        venv = annotate_dir() / ".venv" / "bin" / "python"
    except ServiceError:
        return False
    return (path_or_env(None, "PREFDATA_ANNOTATE_PYTHON") or venv).is_file()


def _run(args: list[str], timeout: float) -> dict[str, Any]:
    script = annotate_dir() / "service.py"
    try:
        proc = subprocess.run(
            [sys.executable, str(script), *args, "--json"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(
            f"annotate/service.py {args[0]} did not finish in {timeout:.0f} s"
        ) from None
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise ServiceError(
            f"annotate/service.py {args[0]} failed (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
        ) from None
    if not isinstance(result, dict):
        raise ServiceError(f"annotate/service.py {args[0]} answered {result!r}")
    if "error" in result:
        raise ServiceError(str(result["error"]))
    return result


def serve(
    *,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    data: str | Path | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Start the local Argilla server (or find it running) and return where and how to log in.

    Output keys: `url`, `username`, `password`, `api_key`, `data_dir`, `started` (False when
    it was already running), `start_seconds`, `components` (PIDs). The data folder is made
    private to its owner (700; the database 600): it holds every user's API key. The first
    start creates the database and the owner user; later starts reuse both. Raises
    ServiceError with the fix (run annotate/setup.sh, install redis-server, free the port,
    the log tail).
    """
    args = ["start", "--port", str(port), "--host", host, "--data-dir", str(data_dir(data))]
    return _run([*args, "--timeout", str(timeout), "--show-secrets"], timeout=timeout + 30)


def stop(*, data: str | Path | None = None) -> dict[str, Any]:
    """Stop the local server, its worker and its Redis (by recorded PID).

    Output keys: `stopped` (names of the parts that were running), `data_dir`.
    """
    return _run(["stop", "--data-dir", str(data_dir(data))], timeout=60)


def status(*, data: str | Path | None = None) -> dict[str, Any]:
    """Whether the local server runs: `running`, `url`, credentials, `components`, `logs`."""
    return _run(["status", "--data-dir", str(data_dir(data)), "--show-secrets"], timeout=30)


SECRETS = ("password", "api_key")


def shown(info: dict[str, Any], *, secrets: bool = False) -> dict[str, Any]:
    """`info` as the command line prints it: the owner's password and API key replaced by
    where they are kept, unless `secrets` (they open every dataset on the server)."""
    if secrets:
        return info
    out = {k: v for k, v in info.items() if k not in SECRETS}
    if any(k in info for k in SECRETS):
        out["credentials"] = str(Path(str(info.get("data_dir", "."))) / "credentials.json")
        out["secrets"] = "hidden (pass --show-secrets to print them)"
    return out


def local_server(data: str | Path | None = None) -> tuple[str, str] | None:
    """(url, owner API key) of the local service's last start, or None if it never started.

    Read from the data folder without asking the server, so prefdata.annotate.bridge can fall back
    to the local service when ARGILLA_API_URL / ARGILLA_API_KEY are not set.
    """
    try:
        folder = data_dir(data)
    except ServiceError:
        return None
    try:
        service = json.loads((folder / "service.json").read_text())
        creds = json.loads((folder / "credentials.json").read_text())
    except (OSError, ValueError):
        return None
    url, key = service.get("url"), creds.get("api_key")
    if isinstance(url, str) and isinstance(key, str):
        return url, key
    return None


def setup(*, quiet: bool = False) -> None:
    """Create (or check) the server's virtual environment: runs annotate/setup.sh."""
    script = annotate_dir() / "setup.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=quiet, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if quiet else "see the output above"
        raise ServiceError(f"annotate/setup.sh failed (exit {proc.returncode}): {detail}")
