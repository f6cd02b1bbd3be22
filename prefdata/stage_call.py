"""What a stage's wrapper does to each call (prefdata.stage declares, this module converts): its
table arguments made polars DataFrames meeting their contracts, the in-memory tables given for
an `Input(table=True)` made polars DataFrames, its choices checked. Split from stage.py, which
derives a stage's parameters from its signature; this is the one entry point of a table a
user holds (pandas, `datasets`, polars, pyarrow, a path) into any stage."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from prefdata.errors import InputError, OptionError, PrefdataError, shorten

if TYPE_CHECKING:
    from prefdata.stage import Param, StageSpec


def converting(func: Callable[..., Any], spec: Callable[[], StageSpec]) -> Callable[..., Any]:
    """`func` with its arguments put through convert_arguments first; an async function
    stays async (a notebook awaits it with the same conversion)."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            bound = inspect.signature(func).bind(*args, **kwargs)
            convert_arguments(spec(), bound)
            return await func(*bound.args, **bound.kwargs)

        return acall

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(func).bind(*args, **kwargs)
        convert_arguments(spec(), bound)
        return func(*bound.args, **bound.kwargs)

    return call


def convert_arguments(spec: StageSpec, bound: inspect.BoundArguments) -> None:
    """The one entry point of a stage's arguments: every table argument as a polars
    DataFrame meeting its contract (`Table`), every in-memory table given for an
    `Input(table=True)` as a polars DataFrame (a path stays a path), every choice checked."""
    for p in spec.params:
        if p.name not in bound.arguments:
            continue
        value = bound.arguments[p.name]
        if p.role == "table" and value is not None:
            bound.arguments[p.name] = load_table(value, p)
        elif p.input is not None and value is not None and not isinstance(value, str | Path):
            from prefdata.io.frames import is_table, to_polars

            if p.input.table:
                bound.arguments[p.name] = to_polars(value, what=p.name)
            elif is_table(value):
                module = type(value).__module__.split(".")[0]
                raise InputError(
                    f"{p.name}: got a {module}.{type(value).__name__}; give the path of a "
                    "file here (this stage reads the file itself)"
                )
        elif p.role == "option" and p.choices:
            check_choice(p, value)


def check_choice(param: Param, value: Any) -> None:
    """Raise OptionError naming the option when `value` is not one of its choices."""
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if v is not None and v not in param.choices:
            allowed = ", ".join(str(c) for c in param.choices)
            raise OptionError(f"must be one of {allowed}; got {shorten(v)}", option=param.name)


def load_table(value: Any, param: Param) -> pl.DataFrame:
    """A table argument as a polars DataFrame meeting the parameter's contract (the first of
    its contracts that the table meets; the error names the first one when none does)."""
    from prefdata.io.frames import source_name, to_polars
    from prefdata.schema import conform, contract_of, validate

    source = source_name(value, param.name)
    table = to_polars(value, what=param.name)
    contracts = param.table.contracts if param.table and param.table.check else ()
    if not contracts:
        return table
    errors: list[tuple[bool, PrefdataError]] = []
    for contract in contracts:
        rows = param.table.rows if param.table else True
        whole = rows is True or (isinstance(rows, tuple) and contract in rows)
        check = validate if whole else conform
        needs = param.table.needs_for(contract) if param.table else None
        try:
            return check(table, contract, source=source, needs=needs)
        except PrefdataError as exc:
            # The error of a contract whose columns the table has says what is wrong with
            # it; "missing column" from another contract it was never meant for would not.
            wanted = needs if needs is not None else contract_of(contract).required
            errors.append((set(wanted) <= set(table.columns), exc))
    raise next((exc for fits, exc in errors if fits), errors[0][1])
