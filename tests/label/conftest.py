"""The model-client fixtures (wire-protocol test server, test key, call cache) for the judge
tests, shared with tests/llm."""

from tests.llm.conftest import api_key, call_cache, fake_server  # noqa: F401
