"""Start, stop and inspect the local Argilla annotation service (server, worker, Redis).

Usage (any Python 3.9+; only the standard library; start.sh / stop.sh / status.sh wrap it):

    python annotate/service.py start  [--port 6900] [--host 127.0.0.1] [--data-dir D] [--json]
                                      [--show-secrets]
    python annotate/service.py stop   [--data-dir D] [--json]
    python annotate/service.py status [--data-dir D] [--json] [--show-secrets]

Everything lives under one data folder (default: annotate/data, or $PREFDATA_ANNOTATE_DATA),
which survives restarts. The database holds every user's API key in plain text (Argilla 2.8
stores them so), so the folder is private to its owner: mode 700, made so on every start, and
the service's processes run with umask 077, so what they create (the database, logs, Redis's
files) is readable by the owner only. The owner's password and API key are printed only with
--show-secrets (prefdata reads them from credentials.json by itself).

    argilla/argilla.db      the SQLite database (records, responses, users and their keys)
    credentials.json        the owner's username, password and API key (mode 600)
    service.json            host, port and URL of the last start
    redis/                  Redis's working folder and socket (jobs queue)
    logs/{server,worker,redis}.log
    run/{server,worker,redis}.pid   "PID START_TIME": stop checks both, so it never
                                    signals a process that merely reuses an old PID

`start` is idempotent: with the service already up on that port it only reports it. On the
first start it creates the owner user (`argilla`) with a random password and API key.
A Redis of your own is used instead of a private one when ARGILLA_REDIS_URL is set.

Exit codes: 0 ok; 1 failure (the message says what to do); 3 `status` of a stopped service.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path(os.environ.get("PREFDATA_ANNOTATE_DATA", HERE / "data"))
DEFAULT_PORT = 6900
OWNER = "argilla"  # the username argilla-server's create_default gives the owner
COMPONENTS = ("server", "worker", "redis")
STOP_ORDER = ("server", "worker", "redis")  # Redis last: the others talk to it


class ServiceError(Exception):
    """A failure with a message that says how to fix it."""


# -- paths and files ----------------------------------------------------------------------


def venv_python() -> Path:
    return Path(os.environ.get("PREFDATA_ANNOTATE_PYTHON", HERE / ".venv" / "bin" / "python"))


def _pid_file(data: Path, name: str) -> Path:
    return data / "run" / f"{name}.pid"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (Linux), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None if not _exists(pid) else "?"
    # The command name (field 2) may hold spaces; fields after the closing paren are fixed.
    return stat.rsplit(")", 1)[1].split()[19]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_pid(data: Path, name: str, pid: int) -> None:
    path = _pid_file(data, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {_start_time(pid) or '?'}\n")


def _live_pid(data: Path, name: str) -> int | None:
    """The recorded PID if that very process is still alive (same start time), else None."""
    try:
        pid_text, started = _pid_file(data, name).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = _start_time(pid)
    if now is None or (started != "?" and now != "?" and now != started):
        return None
    # A zombie (exited, not yet reaped by its parent) is not running.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    return pid


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: dict[str, Any], mode: int = 0o644) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh, indent=2)
    os.replace(tmp, path)


PRIVATE = 0o077  # the umask of the service's processes: files for their owner only


def make_private(data: Path) -> None:
    """The data folder readable by its owner only (700), and the database files that an
    older start left readable (644) made 600."""
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    for path in (data / "argilla").glob("argilla.db*"):
        path.chmod(0o600)


def credentials(data: Path) -> dict[str, str]:
    """The owner's credentials, created (random password and API key) on the first call."""
    path = data / "credentials.json"
    creds = _read_json(path)
    if not creds:
        make_private(data)
        creds = {
            "username": OWNER,
            "password": secrets.token_urlsafe(12),
            "api_key": "prefdata." + secrets.token_urlsafe(24),
        }
        _write_json(path, creds, mode=0o600)
    return {k: str(v) for k, v in creds.items()}


def _redis_socket(data: Path) -> Path:
    path = data / "redis" / "redis.sock"
    if len(str(path)) < 100:  # a Unix socket path must fit in 108 bytes
        return path
    digest = hashlib.sha1(str(data).encode()).hexdigest()[:12]
    return Path("/tmp") / f"prefdata-redis-{digest}.sock"


# -- probes -------------------------------------------------------------------------------


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _redis_ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/v1/status", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{shown}:{port}"


# -- start / stop / status ----------------------------------------------------------------


def _spawn(data: Path, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (data / "logs" / f"{name}.log").open("ab")
    # A session of its own: the service outlives the shell that started it, and stop can
    # signal the process group (rq's worker forks a child per job).
    proc = subprocess.Popen(
        argv,
        cwd=data,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        umask=PRIVATE,
    )
    log.close()
    _write_pid(data, name, proc.pid)
    return proc


def start(
    data: Path = DEFAULT_DATA,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    timeout: float = 120.0,
    secrets: bool = False,
) -> dict[str, Any]:
    """Start (or find running) the service; return status() with `started` set."""
    data = data.resolve()
    make_private(data)
    current = status(data, secrets=secrets)
    if current["running"]:
        if current["port"] == port:
            return {**current, "started": False}
        raise ServiceError(
            f"the service for {data} already runs on port {current['port']}; stop it first "
            f"(python annotate/service.py stop --data-dir {data}) or use that port"
        )
    if current["components"]["server"]["pid"] or current["components"]["worker"]["pid"]:
        stop(data)  # a half-running service (one part crashed): start clean
    python = venv_python()
    if not python.exists():
        raise ServiceError(
            f"the annotation server is not installed ({python} is missing): run "
            "`bash annotate/setup.sh` once"
        )
    if not _port_free(host, port):
        raise ServiceError(
            f"port {port} on {host} is in use by another program: pick another with --port"
        )
    for sub in ("argilla", "redis", "logs", "run"):
        (data / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    credentials(data)

    redis_url = os.environ.get("ARGILLA_REDIS_URL")
    if not redis_url:
        redis_url = _start_redis(data)

    env = dict(os.environ)
    env.update(
        {
            "ARGILLA_HOME_PATH": str(data / "argilla"),
            "ARGILLA_SEARCH_ENGINE": "sql",
            "ARGILLA_REDIS_URL": redis_url,
            # SQLite waits this long for a lock instead of failing with "database is locked".
            "ARGILLA_DATABASE_SQLITE_TIMEOUT": "30",
            "ARGILLA_SHOW_HUGGINGFACE_SPACE_PERSISTENT_STORAGE_WARNING": "false",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PREFDATA_ANNOTATE_CREDENTIALS": str(data / "credentials.json"),
            "PYTHONUNBUFFERED": "1",
            # rq's worker logs through rich, which wraps at 80 columns without a terminal.
            "COLUMNS": "160",
        }
    )
    launcher = str(HERE / "launch.py")
    server = _spawn(
        data, "server", [str(python), launcher, "server", "--host", host, "--port", str(port)], env
    )
    _spawn(data, "worker", [str(python), launcher, "worker"], env)
    url = _url(host, port)
    _write_json(
        data / "service.json",
        {"url": url, "host": host, "port": port, "redis_url": redis_url, "started_at": time.time()},
    )
    t0 = time.monotonic()
    while not _http_ok(url, timeout=1.0):
        if server.poll() is not None or time.monotonic() - t0 > timeout:
            why = "exited" if server.poll() is not None else f"did not answer in {timeout:.0f} s"
            stop(data)
            raise ServiceError(
                f"the Argilla server {why}; its log ({data / 'logs' / 'server.log'}) ends with:\n"
                + _tail(data / "logs" / "server.log")
            )
        time.sleep(0.2)
    return {
        **status(data, secrets=secrets),
        "started": True,
        "start_seconds": round(time.monotonic() - t0, 2),
    }


def _start_redis(data: Path) -> str:
    sock = _redis_socket(data)
    if _live_pid(data, "redis") and _redis_ping(sock):
        return f"unix://{sock}?db=0"
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(
            "redis-server was not found: install Redis (Debian / Ubuntu: "
            "`apt-get install redis-server`), or point ARGILLA_REDIS_URL at a running Redis"
        )
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    argv = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        str(sock),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data / "redis"),
        "--save",
        "60 1",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        str(data / "logs" / "redis.log"),
    ]
    proc = _spawn(data, "redis", argv, dict(os.environ))
    t0 = time.monotonic()
    while not _redis_ping(sock):
        if proc.poll() is not None or time.monotonic() - t0 > 15:
            raise ServiceError(
                f"Redis did not start; {data / 'logs' / 'redis.log'} ends with:\n"
                + _tail(data / "logs" / "redis.log")
            )
        time.sleep(0.05)
    return f"unix://{sock}?db=0"


def stop(data: Path = DEFAULT_DATA, *, timeout: float = 15.0) -> dict[str, Any]:
    """Stop the service's processes (by recorded PID); return which ones were stopped."""
    data = data.resolve()
    stopped: list[str] = []
    for name in STOP_ORDER:
        pid = _live_pid(data, name)
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            t0 = time.monotonic()
            while _live_pid(data, name) is not None and time.monotonic() - t0 < timeout:
                time.sleep(0.05)
            if _live_pid(data, name) is not None:
                _signal_group(pid, signal.SIGKILL)
            stopped.append(name)
        with contextlib.suppress(FileNotFoundError):
            _pid_file(data, name).unlink()
    return {"data_dir": str(data), "stopped": stopped}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The process leads its own session (start_new_session), so its group id is its PID.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def status(data: Path = DEFAULT_DATA, *, secrets: bool = False) -> dict[str, Any]:
    """Where the service is and whether each part runs; the owner's username, and with
    `secrets` its password and API key (else only where they are kept)."""
    data = data.resolve()
    service = _read_json(data / "service.json")
    creds = _read_json(data / "credentials.json")
    comps = {name: {"pid": _live_pid(data, name)} for name in COMPONENTS}
    url = service.get("url")
    healthy = bool(comps["server"]["pid"] and url and _http_ok(url))
    return {
        "running": healthy and comps["worker"]["pid"] is not None,
        "healthy": healthy,
        "url": url,
        "host": service.get("host"),
        "port": service.get("port"),
        "data_dir": str(data),
        "username": creds.get("username"),
        **(
            {"password": creds.get("password"), "api_key": creds.get("api_key")}
            if secrets
            else {"credentials": str(data / "credentials.json")}
        ),
        "components": comps,
        "logs": str(data / "logs"),
    }


# -- command line -------------------------------------------------------------------------


def _print(result: dict[str, Any], as_json: bool, command: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if command == "stop":
        what = ", ".join(result["stopped"]) or "nothing was running"
        print(f"stopped: {what} ({result['data_dir']})")
        return
    if not result.get("running"):
        parts = ", ".join(
            f"{k} {'up' if v['pid'] else 'down'}" for k, v in result["components"].items()
        )
        print(f"not running ({parts}); data: {result['data_dir']}")
        return
    verb = {True: "started", False: "already running"}.get(result.get("started"), "running")
    print(f"Argilla {verb} at {result['url']}")
    print(f"  username: {result['username']}")
    if "api_key" in result:
        print(f"  password: {result['password']}\n  API key:  {result['api_key']}")
        key = result["api_key"]
        print(f"  use it:   export ARGILLA_API_URL={result['url']} ARGILLA_API_KEY={key}")
    else:
        print(f"  password and API key: in {result['credentials']} (or pass --show-secrets)")
    print(f"  data:     {result['data_dir']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The local Argilla annotation service.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        if name != "stop":
            p.add_argument(
                "--show-secrets", action="store_true", help="print the password and API key"
            )
        if name == "start":
            p.add_argument("--port", type=int, default=DEFAULT_PORT)
            p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
            p.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            result = start(
                args.data_dir,
                host=args.host,
                port=args.port,
                timeout=args.timeout,
                secrets=args.show_secrets,
            )
        elif args.command == "stop":
            result = stop(args.data_dir)
        else:
            result = status(args.data_dir, secrets=args.show_secrets)
    except ServiceError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    _print(result, args.json, args.command)
    return 3 if args.command == "status" and not result["running"] else 0


if __name__ == "__main__":
    sys.exit(main())
