"""One entry point for every backend: `make_client(backend, model, **options)`.

The backend modules are imported only when asked for, so `import prefdata` never pulls in
torch, transformers or an SDK. A missing dependency raises MissingExtraError with the pip
command that installs it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Literal, cast

from prefdata.errors import InputError, MissingExtraError
from prefdata.llm.base import Client

__all__ = ["BACKENDS", "Backend", "make_client"]

Backend = Literal["local", "openai", "anthropic"]
BACKENDS: tuple[str, ...] = ("local", "openai", "anthropic")

# backend -> (module, class)
_CLASSES: dict[str, tuple[str, str]] = {
    "local": ("prefdata.llm.local", "LocalClient"),
    "openai": ("prefdata.llm.openai_compat", "OpenAICompatClient"),
    "anthropic": ("prefdata.llm.anthropic", "AnthropicClient"),
}

# top-level module that failed to import -> what installs it
_INSTALL: dict[str, str] = {
    "torch": "pip install 'prefdata[models]'",
    "transformers": "pip install 'prefdata[models]'",
    "safetensors": "pip install 'prefdata[models]'",
    "accelerate": "pip install 'prefdata[models]'",
    "anthropic": "pip install anthropic",
    "openai": "pip install openai",
    "httpx": "pip install httpx",
}


def make_client(backend: str, model: str, **options: Any) -> Client:
    """A client for `backend` ("local" | "openai" | "anthropic") and `model`.

    options go to the backend's class unchanged:
    - local: device="cpu", batch_size=8, dtype=None (see prefdata.llm.local.LocalClient)
    - openai: base_url (required: the server, e.g. "http://localhost:8000/v1"), api_key=None,
      max_concurrency=16, max_retries=6, timeout=60.0
    - anthropic: api_key=None (default: $ANTHROPIC_API_KEY), base_url=None, max_concurrency=8,
      max_retries=6, prices=None, timeout=60.0

    Options that are None are dropped, so a CLI can pass every option it has and each backend
    keeps its own defaults. Raises InputError for an unknown backend or a missing required
    option, MissingExtraError (with the pip command) when the backend's package is missing.
    """
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
    kwargs = {k: v for k, v in options.items() if v is not None}
    if backend == "openai" and "base_url" not in kwargs:
        raise InputError(
            "the openai backend needs base_url: the server speaking the chat-completions API, "
            "e.g. http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)"
        )
    cls = getattr(module, class_name)
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


def backend_options(
    *,
    base_url: str | None = None,
    max_concurrency: int | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Client options per backend from one set of judge / critique settings: device and
    batch size for local models; max_concurrency and base_url for servers (a base_url also
    points the Anthropic client at an Anthropic-speaking server, e.g. a proxy)."""
    local = {k: v for k, v in {"device": device, "batch_size": batch_size}.items() if v is not None}
    remote: dict[str, Any] = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    if base_url:
        remote["base_url"] = base_url
    return {"local": local, "openai": dict(remote), "anthropic": dict(remote)}
