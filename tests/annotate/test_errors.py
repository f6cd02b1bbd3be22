"""Clear errors that say how to fix them: server down, wrong key, unknown dataset, and more."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from prefdata.annotate import bridge as pa
from prefdata.errors import ContractError
from tests.annotate.conftest import PandaLM
from tests.annotate.helpers import Running, free_port, pull_table, push_report

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]


def test_server_down_says_how_to_start_one() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(pa.ArgillaError) as err:
        pull_table("anything", url=url, api_key="some-key")
    message = str(err.value)
    assert f"no Argilla server answers at {url}" in message
    assert "prefdata annotate serve" in message and "ARGILLA_API_URL" in message
    assert "the url argument" in message


def test_wrong_api_key_says_where_the_key_came_from(
    argilla_server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", "not-a-valid-key")
    with pytest.raises(pa.ArgillaError) as err:
        pull_table("anything")
    message = str(err.value)
    assert "refused the API key (401" in message
    assert "$ARGILLA_API_KEY" in message and "prefdata annotate status" in message


def test_unknown_dataset_lists_what_exists(argilla_server: Running, pandalm30: PandaLM) -> None:
    push_report(pandalm30.pairs.head(1), dataset="exists", **argilla_server.auth)
    with pytest.raises(pa.ArgillaError) as err:
        pull_table("no-such-dataset", **argilla_server.auth)
    message = str(err.value)
    assert "no dataset 'no-such-dataset'" in message
    assert "'exists'" in message and "prefdata annotate push" in message
    with pytest.raises(pa.ArgillaError, match="in workspace 'elsewhere'"):
        pull_table("exists", workspace="elsewhere", **argilla_server.auth)


def test_annotator_key_cannot_pull(argilla_server: Running, pandalm30: PandaLM) -> None:
    push_report(pandalm30.pairs.head(1), dataset="exists", **argilla_server.auth)
    user = pa.add_user("only-annotates", workspaces=["argilla"], **argilla_server.auth)
    with pytest.raises(pa.ArgillaError, match="use an owner or admin API key"):
        pull_table("exists", url=argilla_server.url, api_key=user["api_key"])


def test_pushing_another_kind_into_a_dataset_is_refused(
    argilla_server: Running, pandalm30: PandaLM
) -> None:
    push_report(pandalm30.pairs.head(1), dataset="exists", **argilla_server.auth)
    with pytest.raises(pa.ArgillaError, match="holds pairs records, not review"):
        push_report(pandalm30.pairs.head(1), dataset="exists", review=True, **argilla_server.auth)
    with pytest.raises(pa.ArgillaError, match="not a review dataset"):
        pull_table("exists", review_of=pandalm30.pairs.head(1), **argilla_server.auth)


def test_bad_tables_fail_before_any_server_call() -> None:
    # No server is needed to refuse these: the URL points nowhere.
    nowhere = {"url": f"http://127.0.0.1:{free_port()}", "api_key": "k"}
    with pytest.raises(ContractError, match="missing column"):
        push_report(pl.DataFrame({"prompt": ["hi"], "text": ["x"]}), dataset="d", **nowhere)
    # A broken row is refused with its row and column, before any server call.
    broken = pl.DataFrame(
        {"prompt": ["hi", "ho"], "chosen": ["yes", None], "rejected": ["no", "n"]}
    )
    with pytest.raises(ContractError, match="row 2, column 'chosen'"):
        push_report(broken, dataset="d", **nowhere)
    pairs = pl.DataFrame({"prompt": ["hi"], "chosen": ["yes"], "rejected": ["no"]})
    with pytest.raises(pa.ArgillaError, match="at least 1"):
        push_report(pairs, dataset="d", annotators_per_item=0, **nowhere)
    with pytest.raises(pa.ArgillaError, match="cannot read time"):
        pull_table("d", since="last tuesday", **nowhere)


def test_no_server_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    monkeypatch.setenv("PREFDATA_ANNOTATE_DATA", str(tmp_path / "never-started"))
    with pytest.raises(pa.ArgillaError, match="no Argilla server configured") as err:
        pa.resolve_server()
    assert "prefdata annotate serve" in str(err.value) and "ARGILLA_API_KEY" in str(err.value)
    monkeypatch.setenv("ARGILLA_API_URL", "http://example.invalid:6900")
    with pytest.raises(pa.ArgillaError, match="no API key for the Argilla server"):
        pa.resolve_server()
