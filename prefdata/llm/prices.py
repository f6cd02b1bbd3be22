"""Token prices for cost accounting: USD per million tokens, per model.

The built-in table holds Anthropic list prices as published around `CHECKED` (compiled
from the public price lists of that time; check them against the vendor's page before
relying on a bill). Prices change, and models whose price was not published then (the
claude-*-5 generation among them) are missing on purpose: a guessed price is worse than none.
Override or extend it with a dict or a JSON / TOML file, passed as `prices=` or named by the
`PREFDATA_PRICES` environment variable:

    {"claude-sonnet-4-5": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}

`cache_write` defaults to 1.25 x input and `cache_read` to 0.1 x input (Anthropic's 5-minute
prompt-cache multipliers). Message Batches cost `batch_discount` (0.5) of the normal price.
A model with no price gets cost 0.0 and one warning; the token counts are still exact.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefdata.errors import InputError

log = logging.getLogger(__name__)

CHECKED = "2026-05"  # when the built-in prices were last compared with published lists
BATCH_DISCOUNT = 0.5
CACHE_WRITE_FACTOR = 1.25  # 5-minute ephemeral cache writes
CACHE_READ_FACTOR = 0.1


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    @classmethod
    def of(cls, input: float, output: float) -> Price:
        return cls(input, output, input * CACHE_WRITE_FACTOR, input * CACHE_READ_FACTOR)


# Exact model names and their dated snapshots; a name not here is "unknown", never matched by
# prefix (claude-opus-4-5 costs a third of claude-opus-4-1, so prefixes would misprice).
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-8": Price.of(5.0, 25.0),
    "claude-opus-4-7": Price.of(5.0, 25.0),
    "claude-opus-4-6": Price.of(5.0, 25.0),
    "claude-opus-4-5": Price.of(5.0, 25.0),
    "claude-opus-4-1": Price.of(15.0, 75.0),
    "claude-opus-4-0": Price.of(15.0, 75.0),
    "claude-opus-4": Price.of(15.0, 75.0),
    "claude-sonnet-4-6": Price.of(3.0, 15.0),
    "claude-sonnet-4-5": Price.of(3.0, 15.0),
    "claude-sonnet-4-0": Price.of(3.0, 15.0),
    "claude-sonnet-4": Price.of(3.0, 15.0),
    "claude-3-7-sonnet": Price.of(3.0, 15.0),
    "claude-haiku-4-5": Price.of(1.0, 5.0),
    "claude-3-5-haiku": Price.of(0.8, 4.0),
    "claude-3-opus": Price.of(15.0, 75.0),
    "claude-3-haiku": Price(0.25, 1.25, 0.30, 0.03),
}

_SNAPSHOT = re.compile(r"(-latest|[-@]\d{8}(-v\d+(:\d+)?)?)$")


class PriceTable:
    """Looks up a model's price and turns token counts into USD."""

    def __init__(
        self, prices: Mapping[str, Price] | None = None, *, batch_discount: float = BATCH_DISCOUNT
    ) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.batch_discount = batch_discount
        self._warned: set[str] = set()

    def lookup(self, model: str) -> Price | None:
        """Exact name first, then the name without a snapshot date (claude-x-20250101)."""
        if model in self.prices:
            return self.prices[model]
        return self.prices.get(_SNAPSHOT.sub("", model))

    def cost(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
        batch: bool = False,
    ) -> float:
        """USD for one call. Anthropic's `input_tokens` excludes the cached prefix, so the
        four counts are disjoint and simply add up."""
        price = self.lookup(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "no price known for model %r: its cost is reported as 0; add it with "
                    "prices= or a PREFDATA_PRICES file",
                    model,
                )
            return 0.0
        usd = (
            input_tokens * price.input
            + output_tokens * price.output
            + cache_write_tokens * price.cache_write
            + cache_read_tokens * price.cache_read
        ) / 1e6
        return usd * self.batch_discount if batch else usd


def _price_from(entry: Any, model: str, source: str) -> Price:
    if not isinstance(entry, Mapping):
        raise InputError(
            "a price must be a table of USD per million tokens", source=source, column=model
        )
    values: dict[str, float] = {}
    for name in ("input", "output", "cache_write", "cache_read"):
        value = entry.get(name)
        if value is None and name in ("input", "output"):
            raise InputError(f"missing '{name}' price", source=source, column=model)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise InputError(
                    f"'{name}' must be a number >= 0, got {value!r}", source=source, column=model
                )
            values[name] = float(value)
    unknown = set(entry) - {"input", "output", "cache_write", "cache_read"}
    if unknown:
        raise InputError(f"unknown price fields {sorted(unknown)}", source=source, column=model)
    base = Price.of(values["input"], values["output"])
    return Price(
        base.input,
        base.output,
        values.get("cache_write", base.cache_write),
        values.get("cache_read", base.cache_read),
    )


def _read_price_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read the price file: {err.strerror}", source=path) from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise InputError(
            f"not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {err}", source=path
        ) from None
    if not isinstance(data, dict):
        raise InputError("a price file maps model names to prices", source=path)
    return data


def load_prices(
    source: str | os.PathLike[str] | Mapping[str, Any] | PriceTable | None = None,
    *,
    batch_discount: float = BATCH_DISCOUNT,
) -> PriceTable:
    """The built-in table, updated by the `PREFDATA_PRICES` file and then by `source`
    (a dict of model -> {input, output[, cache_write, cache_read]} or a .json / .toml file)."""
    if isinstance(source, PriceTable):
        return source
    table = dict(DEFAULT_PRICES)
    layers: list[tuple[str, Mapping[str, Any]]] = []
    env = os.environ.get("PREFDATA_PRICES")
    if env:
        layers.append((env, _read_price_file(Path(env))))
    if isinstance(source, str | os.PathLike):
        layers.append((str(source), _read_price_file(Path(source))))
    elif source is not None:
        layers.append(("prices", source))
    for where, entries in layers:
        for model, entry in entries.items():
            table[model] = entry if isinstance(entry, Price) else _price_from(entry, model, where)
    return PriceTable(table, batch_discount=batch_discount)
