"""`prefdata annotate ...` on the real local server: users add -> push -> an annotator
submits over REST with their own key -> pull gives back what they chose, in canonical terms."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from prefdata import ids
from prefdata.cli import app
from prefdata.io.tables import read_table
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running, my_queue, respond, rest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]
runner = CliRunner()


def cli(*args: str) -> dict[str, object]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def test_cli_round_trip(argilla_server: Running, pandalm30: PandaLM, tmp_path: Path) -> None:
    conn = ["--url", argilla_server.url, "--api-key", argilla_server.api_key]
    # The session's server keeps one workspace: other tests rely on it being the only one.
    user = cli("annotate", "users", "add", "clara", "--workspace", "argilla", *conn)
    pairs = tmp_path / "pairs.parquet"
    pandalm30.pairs.head(5).write_parquet(pairs)
    pushed = cli(
        "annotate", "push", str(pairs), "--dataset", "cli-5", "--workspace", "argilla", *conn
    )
    assert pushed["records"] == 5

    canonical = {
        r["pair_id"]: ids.canonical_sides(r["chosen"], r["rejected"])
        for r in pandalm30.pairs.head(5).iter_rows(named=True)
    }
    expected = {}
    with rest(argilla_server, str(user["api_key"])) as client:
        for i, record in enumerate(my_queue(client, str(pushed["dataset_id"]))):
            # clara picks whatever is shown first on even records, second on odd ones
            shown = "a" if i % 2 == 0 else "b"
            a, b = canonical[record["external_id"]]
            picked = record["fields"]["response_a" if shown == "a" else "response_b"]
            expected[record["external_id"]] = "a" if picked == a else "b"
            assert picked in (a, b)
            respond(client, record["id"], {"label": shown, "rationale": "cli"})

    out = tmp_path / "votes.parquet"
    report = cli(
        "annotate", "pull", "--dataset", "cli-5", "--workspace", "argilla", "-o", str(out), *conn
    )
    votes = read_table(out)
    assert report["submitted"] == 5 and votes.height == 5
    assert set(votes["annotator"]) == {"clara"}
    got = dict(votes.select("item_id", "label").iter_rows())
    assert got == expected
    assert votes.filter(pl.col("error").is_not_null()).height == 0


def test_cli_unknown_dataset_is_a_clear_error(argilla_server: Running, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "annotate",
            "pull",
            "--dataset",
            "nope",
            "-o",
            str(tmp_path / "x.parquet"),
            "--url",
            argilla_server.url,
            "--api-key",
            argilla_server.api_key,
        ],
    )
    assert result.exit_code == 2
    assert "nope" in result.output and "Traceback" not in result.output
