"""Run the Argilla server or its background worker with the SQL search engine loaded.

Usage (run by service.py with annotate/.venv/bin/python and the ARGILLA_* environment set):

    python launch.py server --host 127.0.0.1 --port 6900
    python launch.py worker

The stock `python -m argilla_server start` cannot load a search-engine plugin ("No engine
class registered for 'sql'"), so this launcher imports the plugin first and then starts
uvicorn on `argilla_server:app` itself. Before serving, `server` migrates the database
(a no-op when it is current), switches SQLite to write-ahead logging (readers no longer wait
for a writer's commit: annotators keep working while records are logged), and creates the
owner user from the credentials file that service.py wrote, when the database has none.
The web app's pages get prefdata's layout rule (layout.py: the question stays on screen on
narrow screens).

The worker runs the server's rq jobs (for example the record-status recompute after a
dataset's task distribution changes); without it those jobs wait in Redis forever. It also
needs the plugin, because jobs open the search engine by name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _migrate() -> None:
    from argilla_server.cli.database.migrate import migrate_db

    migrate_db(revision="head")


def _wal(database_url: str) -> None:
    if "sqlite" not in database_url:
        return
    path = database_url.split(":///", 1)[1].split("?", 1)[0]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _create_owner(credentials_file: Path) -> None:
    from argilla_server.cli.database.users.create_default import _create_default

    creds = json.loads(credentials_file.read_text())
    # Does nothing when the owner already exists (a restart, or a copied database).
    asyncio.run(_create_default(creds["api_key"], creds["password"], quiet=True))


def serve(host: str, port: int) -> None:
    import sql_search_engine  # noqa: F401  (registers the "sql" engine)
    import uvicorn
    from argilla_server.settings import settings

    _migrate()
    _wal(settings.database_url or "")
    credentials = os.environ.get("PREFDATA_ANNOTATE_CREDENTIALS")
    if credentials:
        _create_owner(Path(credentials))
    from argilla_server import app
    from layout import with_layout

    uvicorn.run(with_layout(app), host=host, port=port, access_log=False, log_level="info")


def work() -> None:
    import sql_search_engine  # noqa: F401  (registers the "sql" engine)
    from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE, REDIS_CONNECTION
    from rq import Worker

    Worker([HIGH_QUEUE, DEFAULT_QUEUE], connection=REDIS_CONNECTION).work(with_scheduler=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=6900)
    sub.add_parser("worker")
    args = parser.parse_args()
    if os.environ.get("ARGILLA_SEARCH_ENGINE") != "sql":
        sys.exit("launch.py: set ARGILLA_SEARCH_ENGINE=sql (service.py does this for you)")
    if args.mode == "server":
        serve(args.host, args.port)
    else:
        work()


if __name__ == "__main__":
    main()
