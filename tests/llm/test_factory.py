"""make_client: lazy imports, options passed through, clear errors. No model is loaded here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prefdata.errors import InputError, MissingExtraError
from prefdata.llm import factory
from prefdata.llm.factory import make_client

REPO = Path(__file__).resolve().parents[2]


def test_local_client_is_built_without_loading_the_model() -> None:
    from prefdata.llm import local

    before = dict(local._LOADED)
    client = make_client("local", "smollm2", batch_size=3, device="cpu", dtype=None)
    assert isinstance(client, local.LocalClient)
    assert (client.backend, client.model, client.batch_size, client.dtype) == (
        "local",
        "smollm2",
        3,
        "float32",
    )
    assert before == local._LOADED  # loading waits for the first call


def test_remote_clients_get_their_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-factory")
    anthropic = make_client("anthropic", "claude-sonnet-4-6", max_concurrency=3, base_url=None)
    assert anthropic.backend == "anthropic" and anthropic.model == "claude-sonnet-4-6"
    openai = make_client("openai", "m", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert openai.backend.startswith("openai") and openai.model == "m"


def test_unknown_backend_and_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown backend 'nosuch'; use one of local, openai"):
        make_client("nosuch", "m")
    with pytest.raises(InputError, match="needs base_url"):
        make_client("openai", "m")
    with pytest.raises(InputError, match=r"local backend: .*batch_size") as err:
        make_client("local", "smollm2", max_concurrency=4)
    assert "max_concurrency" in str(err.value)


def test_missing_sdk_names_the_pip_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A backend module whose SDK is not installed: the import error names the package.
    (tmp_path / "prefdata_test_backend.py").write_text("import no_such_sdk_prefdata\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(factory._CLASSES, "anthropic", ("prefdata_test_backend", "Client"))
    with pytest.raises(MissingExtraError) as err:
        make_client("anthropic", "claude-sonnet-4-6")
    message = str(err.value)
    assert "anthropic backend needs the Python package 'no_such_sdk_prefdata'" in message
    assert "pip install no_such_sdk_prefdata" in message
    monkeypatch.setitem(factory._INSTALL, "no_such_sdk_prefdata", "pip install anthropic")
    with pytest.raises(MissingExtraError, match="Install with: pip install anthropic"):
        make_client("anthropic", "claude-sonnet-4-6")


def test_importing_the_factory_imports_no_backend() -> None:
    code = (
        "import sys, prefdata.llm.factory, prefdata.llm.generate\n"
        "names = ('torch', 'transformers', 'anthropic', 'openai')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_one_list_of_backends_is_complete() -> None:
    # Every client class in prefdata/llm (a class with `complete` and `aclose`) is listed in
    # the factory's one table, under the backend name the class itself carries, and says
    # what it can do; the CLI and the pipeline offer exactly that list.
    import importlib
    import inspect
    import pkgutil

    import prefdata.llm
    from prefdata.llm.base import Capabilities
    from prefdata.llm.factory import BACKENDS, capabilities

    found = set()
    for info in pkgutil.iter_modules(prefdata.llm.__path__):
        module = importlib.import_module(f"prefdata.llm.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            is_client = hasattr(cls, "complete") and hasattr(cls, "aclose")
            # The interface, or an abstract base (retry.SDKClient), is not a client.
            protocol = getattr(cls, "_is_protocol", False) or inspect.isabstract(cls)
            if cls.__module__ == module.__name__ and is_client and not protocol:
                found.add((module.__name__, name))
    assert found == set(factory._CLASSES.values())
    assert tuple(factory._CLASSES) == BACKENDS
    for backend in BACKENDS:
        module, name = factory._CLASSES[backend]
        cls = getattr(importlib.import_module(module), name)
        assert cls.backend == backend
        assert isinstance(capabilities(backend), Capabilities)

    from prefdata.pipeline.stages import REGISTRY

    assert REGISTRY["generate"].options["backend"].choices == BACKENDS
