"""One entry point for every backend: `make_client(backend, model, **options)`, and the one
list of backends (`BACKENDS`) that the CLI and the pipeline offer.

The backend modules are imported only when asked for, so `import prefdata` never pulls in
torch, transformers or an SDK. A missing dependency raises MissingExtraError with the pip
command that installs it. What a backend can do is its client class's `capabilities`
(`capabilities(backend)` reads it without making a client).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Literal, cast

from prefdata.errors import InputError, MissingExtraError
from prefdata.llm.base import Capabilities, Client

__all__ = [
    "BACKENDS",
    "Backend",
    "backend_options",
    "capabilities",
    "client_for",
    "make_client",
    "parse_spec",
]

Backend = Literal["local", "openai", "anthropic", "vllm"]

# The one table of backends: backend -> (module, client class). A new backend is a client
# module in prefdata/llm/ and its line here; the CLI and the pipeline offer BACKENDS.
_CLASSES: dict[str, tuple[str, str]] = {
    "local": ("prefdata.llm.local", "LocalClient"),
    "openai": ("prefdata.llm.openai_compat", "OpenAICompatClient"),
    "anthropic": ("prefdata.llm.anthropic", "AnthropicClient"),
    "vllm": ("prefdata.llm.vllm_engine", "VllmClient"),
}
BACKENDS: tuple[str, ...] = tuple(_CLASSES)

# top-level module that failed to import -> what installs it
_INSTALL: dict[str, str] = {
    "torch": "pip install 'prefdata[models]'",
    "transformers": "pip install 'prefdata[models]'",
    "safetensors": "pip install 'prefdata[models]'",
    "accelerate": "pip install 'prefdata[models]'",
    "anthropic": "pip install anthropic",
    "openai": "pip install openai",
    "httpx": "pip install httpx",
    "vllm": "pip install 'prefdata[vllm]'",
}


def make_client(backend: str, model: str, **options: Any) -> Client:
    """A client for `backend` ("local" | "openai" | "anthropic" | "vllm") and `model`.

    options go to the backend's class unchanged:
    - local: device="cpu", batch_size=8, dtype=None (see prefdata.llm.local.LocalClient)
    - openai: base_url (required: the server, e.g. "http://localhost:8000/v1"), api_key=None,
      max_concurrency=16, max_retries=6, timeout=60.0
    - anthropic: api_key=None (default: $ANTHROPIC_API_KEY), base_url=None, max_concurrency=8,
      max_retries=6, prices=None, timeout=60.0
    - vllm: device="auto", dtype=None, batch_size=None, reading="choices",
      tensor_parallel_size=1, max_model_len=None, ... (see prefdata.llm.vllm_engine.VllmClient)

    Options that are None are dropped, so a CLI can pass every option it has and each backend
    keeps its own defaults. Raises InputError for an unknown backend or a missing required
    option, MissingExtraError (with the pip command) when the backend's package is missing.
    """
    cls = _client_class(backend)
    kwargs = {k: v for k, v in options.items() if v is not None}
    if cls.capabilities.needs_base_url and "base_url" not in kwargs:
        raise InputError(
            f"the {backend} backend needs base_url: the server speaking its API, e.g. "
            "http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama); or in "
            f"the spec: {backend}:{model}@http://localhost:8000/v1"
        )
    try:
        # Checked before the call, so a TypeError raised inside the constructor stays a bug
        # report instead of becoming an "unknown option" message.
        inspect.signature(cls).bind(model, **kwargs)
    except TypeError as err:
        accepted = [p for p in inspect.signature(cls).parameters if p != "model"]
        raise InputError(
            f"{backend} backend: {err}; its options are {', '.join(accepted)}"
        ) from err
    return cast(Client, cls(model, **kwargs))


def _client_class(backend: str) -> Any:
    if backend not in _CLASSES:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    module_name, class_name = _CLASSES[backend]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top.startswith("prefdata"):
            raise
        install = _INSTALL.get(top, f"pip install {top}" if top else "pip install prefdata")
        raise MissingExtraError(
            f"the {backend} backend needs the Python package '{top}'. Install with: {install}"
        ) from err
    return getattr(module, class_name)


def capabilities(backend: str) -> Capabilities:
    """What `backend` can do (its client class's `capabilities`), without making a client:
    no model is loaded, no SDK is imported."""
    caps = _client_class(backend).capabilities
    assert isinstance(caps, Capabilities)
    return caps


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """ "backend:model[@URL]" -> (backend, model, endpoint or None); a bare name means the
    local backend. The endpoint is the part after the last "@" when it is a URL
    ("openai:MODEL@http://host:8000/v1"), so each judge of a panel can ask its own server;
    an "@" inside a model name ("claude-3-5-sonnet@20240620") stays in the name."""
    endpoint: str | None = None
    head, at, tail = spec.rpartition("@")
    if at and "://" in tail:
        spec, endpoint = head, tail
    backend, sep, model = spec.partition(":")
    if not sep:
        return "local", spec, endpoint
    if not model:
        raise InputError(f"judge {spec!r}: write backend:model, e.g. anthropic:claude-sonnet-4-6")
    return backend, model, endpoint


def client_for(spec: str | Client, options: Mapping[str, Mapping[str, Any]] | None) -> Client:
    """The client for a "backend:model[@URL]" spec (options[backend] go to make_client; the
    spec's URL is its base_url); a client given is returned as it is."""
    if not isinstance(spec, str):
        return spec
    backend, model, endpoint = parse_spec(spec)
    settings = dict((options or {}).get(backend, {}))
    if endpoint is not None:
        settings["base_url"] = endpoint
    return make_client(backend, model, **settings)


def backend_options(**settings: Any) -> dict[str, dict[str, Any]]:
    """Client options per backend from one set of settings (e.g. base_url, max_concurrency,
    device, batch_size): each backend gets those its client class accepts, None left out.
    So one `--base-url` reaches every server backend, `--device` every local one."""
    out: dict[str, dict[str, Any]] = {}
    for backend in BACKENDS:
        accepted = inspect.signature(_client_class(backend)).parameters
        out[backend] = {k: v for k, v in settings.items() if v is not None and k in accepted}
    return out
