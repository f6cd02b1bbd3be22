"""Model clients (local transformers, OpenAI-compatible servers, Anthropic) behind one small
async interface, and one on-disk call cache shared by all of them.

    client = make_client("local", "smollm2")          # or "openai" / "anthropic"
    responses = await client.complete([Request(messages=[...], params=Params(...))])

Every call goes through `prefdata.llm.cache.CallCache` so an interrupted run resumes without
paying twice.
"""

from prefdata.llm.base import Client, Params, Request, Response

__all__ = ["Client", "Params", "Request", "Response"]
