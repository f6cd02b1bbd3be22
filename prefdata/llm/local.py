"""The local backend: a causal LM run with transformers in this process (CPU or GPU).

    client = LocalClient("smollm2")                 # the embedded SmolLM2-135M-Instruct
    [reply] = await client.complete([Request(messages=({"role": "user", "content": "Hi"},))])

What it does with a `Request`:

- text mode (the default): the chat template (with `Request.system` as a leading system
  message) with the assistant turn opened, then sampling with `temperature` / `top_p` (no
  top-k, no repetition penalty: nothing but the request's own parameters)
  up to `max_new_tokens`, stopping at the model's eos token or at the first of `stop` (the stop
  string itself is cut from the text). `temperature` 0 is greedy.
- `choices` mode (`Request.choices`, e.g. ("A", "B")): no generation. One forward pass gives the
  next-token distribution after the opened assistant turn; `Response.choice_probs` maps each
  choice to the probability of its *first token*, renormalised over the choices, and
  `Response.choice_mass` is the raw probability mass those tokens hold together (low mass means
  the model did not really mean to answer with one of them).
- `logprobs=True`: `Response.token_logprobs` holds, for each generated token kept in the text,
  its log-probability under the model itself (log-softmax of the raw logits: temperature and
  top_p shape the sampling, not these numbers).

Reproducibility (what is guaranteed): each request samples from its own torch.Generator seeded
with `Params.seed` (on the CPU even when the model is on a GPU), drawing one noise vector per
generated token (Gumbel-max sampling, see `_Sampler`). Which batch a request lands in, its
position there and its neighbours' parameters never change its random numbers, so the same
request with the same seed gives the same text in batches of any size and in any order, on the
same machine and library versions. The one thing batch shapes can change is floating-point
rounding of the logits (padding changes the shapes the kernels see): about 1e-5 in float32 on
a CPU, which changes a drawn token only when the best two noisy scores are that close (about
one token in 10^5; none in our tests and benchmark); in bfloat16 on a GPU the rounding is
larger and so is that chance. A request with temperature > 0 and no seed gets a fresh random
seed (not reproducible, on purpose). Greedy requests (temperature 0) need no seed.

Errors are per row (`Response.error`), never raised for one request: a prompt that does not fit
the model's context with `max_new_tokens` on top, invalid sampling parameters, a `tool` schema
(the local backend cannot force tool use), two choices starting with the same token.
Configuration errors (model not found, torch missing) raise when the model is first needed.

The blocking torch work runs in a worker thread (`asyncio.to_thread`), one batch at a time per
model, so the event loop (progress bars, HTTP clients of other backends) stays responsive.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefdata.errors import OptionError
from prefdata.llm.base import (
    Capabilities,
    InProcessClient,
    Message,
    OnAnswer,
    Request,
    Response,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["LocalClient", "default_dtype"]

# Loaded models, shared by every LocalClient in the process: a judge and a generator on the
# same model should not hold two copies of the weights.
_LOADED: dict[tuple[str, str, str], tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
_LOAD_LOCK = threading.Lock()


def default_dtype(device: str) -> str:
    """float32 on CPU (bfloat16 there is emulated and about 10x slower); bfloat16 on a CUDA
    device that supports it, else float32."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bfloat16"
    return "float32"


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Item:
    """One request on its way through the model: its index in the call and its token ids."""

    index: int
    request: Request
    ids: list[int]
    seed: int = 0
    # filled for choices mode
    choice_tokens: list[int] = field(default_factory=list)


class LocalClient(InProcessClient):
    """A transformers causal LM behind the `Client` interface.

    model: "smollm2" (the embedded model) or a local model folder (see prefdata.models.load).
    device: "cpu", "cuda", "cuda:1", or "auto" (CUDA when available).
    batch_size: requests per forward pass. Requests are grouped by mode, max_new_tokens and
        stop strings, sorted by prompt length (less padding), then cut into batches.
    dtype: None picks `default_dtype(device)`; or a torch dtype name ("float32", "bfloat16").
    """

    backend = "local"
    capabilities = Capabilities(reads_choice_probs=True, token_logprobs=True)

    def __init__(
        self,
        model: str = "smollm2",
        *,
        device: str = "cpu",
        batch_size: int = 8,
        dtype: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise OptionError(f"must be at least 1, got {batch_size}", option="batch_size")
        self.model = str(model)
        self.device = _resolve_device(device)
        self.batch_size = batch_size
        self.dtype = dtype or default_dtype(self.device)
        # Part of every cache key: another device or precision rounds the logits otherwise.
        self.endpoint = f"{self.device}/{self.dtype}"
        # One batch at a time per client: torch already uses every core for one batch, and
        # two interleaved generate() calls on one model would only fight over them.
        super().__init__()

    # --- loading ---

    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer, loaded on first use and shared across clients."""
        key = (self.model, self.device, self.dtype)
        with _LOAD_LOCK:
            if key not in _LOADED:
                from prefdata import models

                _LOADED[key] = models.load(self.model, device=self.device, dtype=self.dtype)
            return _LOADED[key]

    def unload(self) -> None:
        """Drop this client's model from the process-wide cache, so its memory is freed once
        nothing else holds it; the next call loads it again. A process that samples from
        many models in turn (each trained policy of an experiment) would otherwise keep them
        all."""
        with _LOAD_LOCK:
            _LOADED.pop((self.model, self.device, self.dtype), None)

    @property
    def context_length(self) -> int:
        model, tokenizer = self.load()
        limit = getattr(model.config, "max_position_embeddings", None)
        # Tokenizers without a limit report a huge sentinel (~1e30); the model's own position
        # count is the real bound when it has one.
        if isinstance(limit, int) and limit > 0:
            return limit
        return int(min(tokenizer.model_max_length, 1 << 20))

    # --- internals (the Client interface is InProcessClient's) ---

    def _complete(self, requests: Sequence[Request], on_answer: OnAnswer) -> list[Response]:
        model, tokenizer = self.load()
        out: list[Response | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[_Item]] = {}
        context = self.context_length
        for i, request in enumerate(requests):
            problem = _check_request(request)
            if problem:
                out[i] = Response(error=problem)
                continue
            ids = request_token_ids(tokenizer, request)
            needed = len(ids) + (1 if request.choices else request.params.max_new_tokens)
            if needed > context:
                extra = (
                    ""
                    if request.choices
                    else f" plus max_new_tokens {request.params.max_new_tokens}"
                )
                out[i] = Response(
                    error=f"prompt too long: {len(ids)} tokens{extra} exceed the model's "
                    f"context of {context} tokens",
                    input_tokens=len(ids),
                )
                continue
            item = _Item(i, request, ids)
            if request.choices:
                tokens, problem = choice_token_ids(tokenizer, request.choices)
                if problem:
                    out[i] = Response(error=problem, input_tokens=len(ids))
                    continue
                item.choice_tokens = tokens
                key: tuple[Any, ...] = ("choices",)
            else:
                seed = request.params.seed
                if seed is None:
                    seed = secrets.randbits(63)
                item.seed = seed
                key = ("text", request.params.max_new_tokens, request.params.stop)
            groups.setdefault(key, []).append(item)
        for key, items in groups.items():
            items.sort(key=lambda it: len(it.ids))
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                if key[0] == "choices":
                    answers = self._choices_batch(model, tokenizer, batch)
                else:
                    answers = self._generate_batch(model, tokenizer, batch, key[1], key[2])
                for item, answer in zip(batch, answers, strict=True):
                    out[item.index] = answer
                    on_answer(item.index, answer)
        return [r if r is not None else Response(error="internal: no answer") for r in out]

    def _generate_batch(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch: list[_Item],
        max_new_tokens: int,
        stop: tuple[str, ...],
    ) -> list[Response]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        pad = int(tokenizer.pad_token_id)
        eos = _eos_ids(model, tokenizer)
        input_ids, attention = _pad_left([it.ids for it in batch], pad, self.device)
        sampler = _Sampler(
            seeds=[it.seed for it in batch],
            temperatures=[it.request.params.temperature for it in batch],
            top_ps=[it.request.params.top_p for it in batch],
            want_logprobs=[it.request.logprobs for it in batch],
        )
        config = GenerationConfig(
            # Greedy on top of the sampler: the sampler leaves exactly one finite logit per
            # row, so "greedy" takes the token it drew; generate() handles the KV cache,
            # eos, padding and stop strings.
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=sorted(eos),
            stop_strings=list(stop) or None,
        )
        extra: dict[str, Any] = {"tokenizer": tokenizer} if stop else {}
        with torch.inference_mode():
            output = model.generate(  # type: ignore[operator]
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                **extra,
            )
        prompt_len = input_ids.shape[1]
        answers = []
        for row, item in enumerate(batch):
            generated = [int(t) for t in output[row, prompt_len:].tolist()]
            answers.append(
                _text_response(tokenizer, item, generated, sampler.logprobs[row], stop, eos)
            )
        return answers

    def _choices_batch(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: list[_Item]
    ) -> list[Response]:
        import torch

        # Right padding: the real tokens keep positions 0..n-1 and never attend to the pads
        # after them, so each row reads exactly what it would alone at its last real token.
        pad = int(tokenizer.pad_token_id)
        width = max(len(it.ids) for it in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            ids[row, : len(item.ids)] = torch.tensor(item.ids)
            mask[row, : len(item.ids)] = 1
        with torch.inference_mode():
            logits = model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
        last = torch.tensor([len(it.ids) - 1 for it in batch], device=logits.device)
        rows = torch.arange(len(batch), device=logits.device)
        probs = torch.softmax(logits[rows, last].float(), dim=-1).cpu()
        answers = []
        for row, item in enumerate(batch):
            raw = [float(probs[row, t]) for t in item.choice_tokens]
            mass = sum(raw)
            if mass <= 0.0 or not math.isfinite(mass):
                answers.append(
                    Response(
                        error="the choices have no probability mass", input_tokens=len(item.ids)
                    )
                )
                continue
            answers.append(
                Response(
                    choice_probs={
                        c: p / mass for c, p in zip(item.request.choices, raw, strict=True)
                    },
                    choice_mass=mass,
                    finish_reason="choices",
                    input_tokens=len(item.ids),
                )
            )
        return answers


class _Sampler:
    """A logits processor that draws each row's next token from that row's own generator.

    Sampling is the Gumbel-max trick: token = argmax(logits / temperature + Gumbel noise),
    with a fresh noise vector (one uniform per vocabulary entry) from the row's generator at
    every step. It draws from exactly the softmax distribution, like inverse-CDF sampling, but
    is far less sensitive to the tiny logit differences that batch shapes cause: the drawn token
    changes only if the best two noisy scores lie within that difference (about 1e-5 in float32,
    so about one token in 10^5), whatever the vocabulary size. Inverse-CDF sampling changes
    whenever the uniform draw lands within the CDF's error of a boundary, and in a flat
    distribution over 49k tokens that was about one token in 500 when measured.

    top_p keeps the smallest set of most likely tokens whose probability reaches top_p (the
    nucleus) and samples among them. It returns logits with one finite entry per row (0 at the
    drawn token), so greedy decoding takes exactly that token. It also records the model's
    log-probability of each token (from the raw logits it receives: generate() is given no
    other processors).
    """

    def __init__(
        self,
        seeds: list[int],
        temperatures: list[float],
        top_ps: list[float],
        want_logprobs: list[bool],
    ) -> None:
        import torch

        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32)
        self.sampled_rows = [i for i, t in enumerate(temperatures) if t > 0]
        self.nucleus_rows = [i for i in self.sampled_rows if top_ps[i] < 1.0]
        self.want_logprobs = any(want_logprobs)
        self.logprobs: list[list[float]] = [[] for _ in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        logits = scores.float().cpu()
        tokens = logits.argmax(dim=-1)  # greedy rows keep this
        if self.sampled_rows:
            rows = torch.tensor(self.sampled_rows)
            scaled = logits[rows] / self.temperatures[rows, None]
            if self.nucleus_rows:
                scaled = self._nucleus(scaled, rows)
            # Each row draws its own full noise vector every step, so its random numbers
            # never depend on the other rows or on the batch size.
            uniforms = torch.stack(
                [
                    torch.rand(logits.shape[-1], generator=self.generators[r])
                    for r in self.sampled_rows
                ]
            )
            gumbel = -torch.log(-torch.log(uniforms))
            tokens[rows] = (scaled + gumbel).argmax(dim=-1)
        if self.want_logprobs:
            logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
            for row, value in enumerate(logp.tolist()):
                self.logprobs[row].append(float(value))
        forced = torch.full_like(scores, float("-inf"))
        forced[torch.arange(scores.shape[0], device=scores.device), tokens.to(scores.device)] = 0.0
        return forced

    def _nucleus(self, scaled: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`scaled` with the tokens outside each nucleus row's top-p set at -inf."""
        import torch

        top_ps = self.top_ps[rows]
        probs = torch.softmax(scaled, dim=-1)
        # Stable sort: equal probabilities keep vocabulary order, so the set is well defined.
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        # A token is in the set if the mass before it is still short of top_p (so the most
        # likely token always is).
        keep_sorted = (torch.cumsum(sorted_p, dim=-1) - sorted_p) < top_ps[:, None]
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        keep |= (top_ps >= 1.0)[:, None]  # rows without a nucleus keep every token
        return torch.where(keep, scaled, torch.full_like(scaled, float("-inf")))


def _check_request(request: Request) -> str | None:
    if not request.messages:
        return "no messages"
    if request.tool is not None:
        return "the local backend cannot force a tool schema; use choices or text"
    if request.choices:
        return None
    return request.params.problem()


def _chat(request: Request) -> list[Message]:
    chat = [{"role": str(m["role"]), "content": str(m["content"])} for m in request.messages]
    if request.system:
        if chat and chat[0]["role"] == "system":
            # One system message: templates differ in what they do with two.
            chat[0] = {"role": "system", "content": f"{request.system}\n\n{chat[0]['content']}"}
        else:
            chat.insert(0, {"role": "system", "content": request.system})
    return chat


def request_token_ids(tokenizer: PreTrainedTokenizerBase, request: Request) -> list[int]:
    """The token ids of a request's chat, ready for the answer (shared with the vllm backend,
    which must feed the exact same prompt tokens)."""
    text = tokenizer.apply_chat_template(_chat(request), add_generation_prompt=True, tokenize=False)
    # The template already wrote every special token; adding them again would double BOS.
    ids = tokenizer(str(text), add_special_tokens=False)["input_ids"]
    return [int(t) for t in ids]


def choice_token_ids(
    tokenizer: PreTrainedTokenizerBase, choices: Sequence[str]
) -> tuple[list[int], str | None]:
    """The first token of each choice (whose next-token probability is read), or ([], why
    not) when a choice has no token or two choices share their first one."""
    tokens = []
    for choice in choices:
        ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if not ids:
            return [], f"choice {choice!r} has no tokens"
        tokens.append(int(ids[0]))
    if len(set(tokens)) < len(tokens):
        return [], f"choices {list(choices)} share a first token; make their first tokens differ"
    return tokens, None


def _pad_left(rows: list[list[int]], pad: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _text_response(
    tokenizer: PreTrainedTokenizerBase,
    item: _Item,
    generated: list[int],
    logprobs: list[float],
    stop: tuple[str, ...],
    eos_ids: set[int],
) -> Response:
    # generate() fills finished rows with pad (often == eos): the first eos or pad ends the text.
    ends = eos_ids | {int(tokenizer.pad_token_id)}
    end = next((k for k, t in enumerate(generated) if t in ends), len(generated))
    tokens = generated[:end]
    text = str(tokenizer.decode(tokens, skip_special_tokens=True))
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        text = text[:cut]
        # Keep the log-probabilities of the tokens wholly before the stop string.
        kept = 0
        while (
            kept < len(tokens)
            and len(tokenizer.decode(tokens[: kept + 1], skip_special_tokens=True)) <= cut
        ):
            kept += 1
        finish, n_out, n_logprobs = "stop", len(tokens), kept
    elif end < len(generated):
        finish, n_out, n_logprobs = "stop", end + 1, end
    else:
        finish, n_out, n_logprobs = "length", end, end
    return Response(
        text=text,
        token_logprobs=logprobs[:n_logprobs] if item.request.logprobs else None,
        finish_reason=finish,
        input_tokens=len(item.ids),
        output_tokens=n_out,
    )


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Tokens that end a reply: the tokenizer's eos and the model's (instruct models often list
    an end-of-turn token there too)."""
    ids: set[int] = set()
    for eos in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(eos, int):
            ids.add(eos)
        elif eos is not None:
            ids.update(int(e) for e in eos)
    return ids
