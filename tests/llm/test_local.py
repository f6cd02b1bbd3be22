"""The local backend on the real embedded model (SmolLM2-135M-Instruct), short generations.

The model is loaded once per module from the default cache (converted once per machine, see
tests/test_models.py). Expected values are never hard-coded model outputs: they come from an
independent path through the same model (models.generate_text for greedy text, a plain forward
pass for log-probabilities and next-token probabilities) or from a second run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from prefdata import models
from prefdata.llm.base import Params, Request, Response
from prefdata.llm.local import LocalClient, default_dtype

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

JOKE = ({"role": "user", "content": "Tell me a joke about cats."},)
SUM = ({"role": "user", "content": "What is 2 + 2? Explain your reasoning step by step."},)
SKY = ({"role": "user", "content": "Is the sky blue on a clear day? Answer A for yes, B for no."},)
GRASS = ({"role": "user", "content": "Is grass purple? Answer A for yes, B for no."},)


@pytest.fixture(scope="module")
def client() -> LocalClient:
    c = LocalClient("smollm2", batch_size=4)
    c.load()
    return c


def run(client: LocalClient, requests: list[Request]) -> list[Response]:
    return asyncio.run(client.complete(requests))


def sampled(messages: tuple[dict[str, str], ...], seed: int, **kw: Any) -> Request:
    params = Params(temperature=1.0, max_new_tokens=kw.pop("max_new_tokens", 8), seed=seed)
    return Request(messages=messages, params=params, **kw)


def teacher_forced_logprobs(
    client: LocalClient, request: Request, text_ids: list[int]
) -> list[float]:
    """Log-probabilities of `text_ids` after the prompt, from one plain forward pass."""
    model, tokenizer = client.load()
    prompt = tokenizer.apply_chat_template(
        list(request.messages), add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + text_ids])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids)
    return [float(logp[start + k - 1, t]) for k, t in enumerate(text_ids)]


def test_precision_follows_the_device() -> None:
    assert default_dtype("cpu") == "float32"
    expected = (
        "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    )
    assert default_dtype("cuda") == expected
    assert LocalClient(device="cpu").dtype == "float32"


def test_greedy_matches_the_plain_generation_path(client: LocalClient) -> None:
    model, tokenizer = client.load()
    [reply] = run(client, [Request(messages=JOKE, params=Params(temperature=0, max_new_tokens=10))])
    expected = models.generate_text(model, tokenizer, list(JOKE), max_new_tokens=10)
    assert reply.ok, reply.error
    assert reply.text is not None and reply.text.strip() == expected
    assert reply.finish_reason in ("length", "stop")
    assert reply.input_tokens > 10
    assert 1 <= reply.output_tokens <= 10


def test_seeded_sampling_is_independent_of_batch_size_and_order(client: LocalClient) -> None:
    requests = [
        sampled(JOKE, seed=1, logprobs=True),
        sampled(SUM, seed=1, logprobs=True),
        sampled(JOKE, seed=2, logprobs=True),
        sampled(SUM, seed=3, logprobs=True),
    ]
    together = run(client, requests)  # batch of 4 (two prompt lengths: padded)
    alone = run(LocalClient("smollm2", batch_size=1), requests[::-1])[::-1]
    for a, b in zip(together, alone, strict=True):
        assert a.ok and b.ok
        assert a.text == b.text
        assert a.token_logprobs is not None and b.token_logprobs is not None
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
    # Different seeds for one prompt are different draws (8 tokens at temperature 1).
    assert together[0].text != together[2].text
    # Same seed, second run: the same text.
    assert run(client, [requests[0]])[0].text == together[0].text


def test_logprobs_are_the_models_own(client: LocalClient) -> None:
    request = sampled(SUM, seed=5, logprobs=True, max_new_tokens=6)
    [reply] = run(client, [request])
    assert reply.ok and reply.token_logprobs is not None and reply.text is not None
    _, tokenizer = client.load()
    text_ids = tokenizer(reply.text, add_special_tokens=False)["input_ids"]
    # Re-tokenizing the decoded text gives the same tokens for plain text like this.
    assert len(text_ids) == len(reply.token_logprobs) == reply.output_tokens
    expected = teacher_forced_logprobs(client, request, text_ids)
    assert reply.token_logprobs == pytest.approx(expected, abs=1e-3)
    assert all(lp <= 0 for lp in reply.token_logprobs)
    # Without logprobs=True none are returned.
    [plain] = run(client, [sampled(SUM, seed=5, max_new_tokens=6)])
    assert plain.token_logprobs is None and plain.text == reply.text


def test_stop_string_cuts_the_text(client: LocalClient) -> None:
    greedy = Params(temperature=0, max_new_tokens=16)
    [full] = run(client, [Request(messages=JOKE, params=greedy)])
    assert full.text is not None
    words = full.text.split()
    assert len(words) >= 3, full.text
    stop = " " + words[2]
    cut_at = full.text.index(stop)
    params = Params(temperature=0, max_new_tokens=16, stop=(stop,))
    [cut] = run(client, [Request(messages=JOKE, params=params, logprobs=True)])
    assert cut.text == full.text[:cut_at]
    assert cut.finish_reason == "stop"
    assert cut.output_tokens < 16
    assert cut.token_logprobs is not None and len(cut.token_logprobs) < cut.output_tokens


def test_choices_mode_gives_next_token_probabilities(client: LocalClient) -> None:
    replies = run(
        client,
        [Request(messages=SKY, choices=("A", "B")), Request(messages=GRASS, choices=("A", "B"))],
    )
    for r in replies:
        assert r.ok, r.error
        assert r.text is None and r.output_tokens == 0
        assert r.choice_probs is not None and set(r.choice_probs) == {"A", "B"}
        assert sum(r.choice_probs.values()) == pytest.approx(1.0, abs=1e-9)
        assert r.choice_mass is not None and 0 < r.choice_mass <= 1
    sky, grass = replies
    assert sky.choice_probs is not None and grass.choice_probs is not None
    assert abs(sky.choice_probs["A"] - grass.choice_probs["A"]) > 1e-3

    # The same numbers from a plain forward pass of one prompt (no padding, no batch).
    model, tokenizer = client.load()
    prompt = tokenizer.apply_chat_template(list(GRASS), add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
    a, b = (tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("A", "B"))
    mass = float(probs[a] + probs[b])
    assert grass.choice_mass == pytest.approx(mass, rel=1e-4)
    assert grass.choice_probs["A"] == pytest.approx(float(probs[a]) / mass, abs=1e-5)


def test_system_prefix_becomes_the_system_message(client: LocalClient) -> None:
    _, tokenizer = client.load()
    from prefdata.llm.local import request_token_ids

    with_system = request_token_ids(tokenizer, Request(messages=SKY, system="Answer tersely."))
    text = tokenizer.decode(with_system)
    assert text.startswith("<|im_start|>system\nAnswer tersely.<|im_end|>")
    merged = request_token_ids(
        tokenizer,
        Request(messages=({"role": "system", "content": "Be kind."}, *SKY), system="Rubric."),
    )
    assert tokenizer.decode(merged).count("<|im_start|>system") == 1
    assert "Rubric.\n\nBe kind." in tokenizer.decode(merged)


def test_too_long_prompt_is_a_row_error_not_a_crash(client: LocalClient) -> None:
    long = ({"role": "user", "content": "word " * 9000},)
    replies = run(
        client,
        [
            Request(messages=long, params=Params(max_new_tokens=4)),
            Request(messages=JOKE, params=Params(temperature=0, max_new_tokens=4)),
            Request(messages=long, choices=("A", "B")),
        ],
    )
    assert replies[0].error is not None
    assert "prompt too long" in replies[0].error and "8192" in replies[0].error
    assert replies[0].input_tokens > 8192
    assert replies[1].ok and replies[1].text
    assert replies[2].error is not None and "prompt too long" in replies[2].error


def test_bad_requests_are_row_errors(client: LocalClient) -> None:
    replies = run(
        client,
        [
            Request(messages=JOKE, params=Params(temperature=-1)),
            Request(messages=JOKE, params=Params(top_p=0)),
            Request(messages=JOKE, params=Params(max_new_tokens=0)),
            Request(messages=JOKE, tool={"name": "t", "input_schema": {}}),
            Request(messages=SKY, choices=("Yes", "Yes please")),
            Request(messages=()),
        ],
    )
    errors = [r.error or "" for r in replies]
    assert "temperature" in errors[0]
    assert "top_p" in errors[1]
    assert "max_new_tokens" in errors[2]
    assert "tool" in errors[3]
    assert "share a first token" in errors[4]
    assert "no messages" in errors[5]


def test_top_p_near_zero_is_greedy(client: LocalClient) -> None:
    # top_p keeps the smallest prefix of the sorted distribution reaching p: with a tiny p
    # only the most likely token survives, so sampling at any seed equals greedy decoding.
    greedy = run(client, [Request(messages=SUM, params=Params(temperature=0, max_new_tokens=6))])
    nucleus = run(
        client,
        [
            Request(
                messages=SUM, params=Params(temperature=1.5, top_p=1e-6, max_new_tokens=6, seed=s)
            )
            for s in (11, 12)
        ],
    )
    assert [r.text for r in nucleus] == [greedy[0].text] * 2


def test_complete_runs_off_the_event_loop(client: LocalClient) -> None:
    async def main() -> tuple[list[Response], int]:
        ticks = 0
        task = asyncio.create_task(
            client.complete(
                [Request(messages=JOKE, params=Params(temperature=0, max_new_tokens=8))]
            )
        )
        while not task.done():
            ticks += 1
            await asyncio.sleep(0.005)
        return await task, ticks

    replies, ticks = asyncio.run(main())
    assert replies[0].ok
    # The loop kept running while the model worked in its thread.
    assert ticks > 3


def test_sampler_draws_from_the_softmax_distribution() -> None:
    from prefdata.llm.local import _Sampler

    # 6000 rows of the same 5-token logits, one seed per row: one call draws one token each.
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).repeat(6000, 1)
    for temperature, top_p in ((1.0, 1.0), (0.5, 1.0), (1.0, 0.8)):
        sampler = _Sampler(
            seeds=list(range(6000)),
            temperatures=[temperature] * 6000,
            top_ps=[top_p] * 6000,
            want_logprobs=[False] * 6000,
        )
        forced = sampler(torch.zeros((6000, 1), dtype=torch.long), logits.clone())
        tokens = forced.argmax(dim=-1)
        assert bool(torch.isfinite(forced).sum(dim=-1).eq(1).all())  # one finite entry per row
        expected = torch.softmax(logits[0] / temperature, dim=-1)
        if top_p < 1:
            # probabilities 0.48, 0.18, 0.11, ...: 0.48 + 0.18 < 0.8, so the nucleus is 3 tokens
            expected[3:] = 0
            expected /= expected.sum()
        observed = torch.bincount(tokens, minlength=5).float() / 6000
        # 6000 draws: the standard error of a frequency is at most 0.0065
        assert observed.tolist() == pytest.approx(expected.tolist(), abs=0.025)
        if top_p < 1:
            assert int(observed[3:].sum() * 6000) == 0


def test_unload_frees_the_shared_model_and_the_next_call_reloads_it() -> None:
    import gc
    import weakref

    from prefdata.llm import local

    first = LocalClient("smollm2", batch_size=2, dtype="float32")
    loaded = weakref.ref(first.load()[0])
    request = sampled(JOKE, seed=3, max_new_tokens=4)
    before = run(first, [request])[0].text
    first.unload()
    gc.collect()
    # nothing else held it: the weights are gone, not merely forgotten by the cache
    assert loaded() is None
    assert ("smollm2", first.device, "float32") not in local._LOADED
    again = run(first, [request])[0].text  # loads a fresh copy
    assert again == before
    first.unload()
