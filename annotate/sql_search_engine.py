"""A search engine for argilla-server 2.8 that answers from the server's own SQL database.

argilla-server needs Elasticsearch or OpenSearch for its record searches, queue, progress and
metadata metrics. Neither can run here, and for thousands of records the database that already
holds every record, response and suggestion is enough. This plugin registers itself as
`ARGILLA_SEARCH_ENGINE=sql` and implements the engine contract
(`argilla_server/search_engine/base.py`) with SQL:

- `search`: filters on record properties (status, id, external_id, dates), on per-user
  response status (`pending` = no response by that user), on response values, on suggestion
  value / score / agent / type and on metadata; filters are ANDed; sort by any of those, with
  `inserted_at, id` as the tiebreak so pages are stable; offset / limit with an exact `total`;
  text search as case-insensitive substrings (every word must occur, Elasticsearch's
  `default_operator: AND`), without relevance ranking.
- `get_dataset_progress`, `get_dataset_user_progress`, `compute_metrics_for`: aggregates.
- The ten index-maintenance hooks do nothing: the database is the index, so there is nothing
  to keep in sync.
- `similarity_search`: a clean 422 (vector search needs a real vector index).

Differences from Elasticsearch: SQLite JSON functions only (`json_extract`, `json_each`),
no ranking of text matches, and the per-annotator record order is a rotation of one fixed
order (a user-specific starting point) instead of a per-user shuffle.

Importing this module registers the engine; `launch.py` imports it before the app starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from argilla_server.database import AsyncSessionLocal
from argilla_server.enums import (
    MetadataPropertyType,
    RecordStatus,
    ResponseStatus,
    ResponseStatusFilter,
    SortOrder,
)
from argilla_server.errors.future import UnprocessableEntityError
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Question,
    Record,
    Response,
    Suggestion,
    User,
)
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    FilterScope,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import and_, exists, false, func, literal, not_, or_, select, text, true
from sqlalchemy.sql.elements import ColumnElement

ENGINE_NAME = "sql"
_DATE_COLUMNS = {"inserted_at", "updated_at"}


def _json_path(*keys: str) -> str:
    # Quoted keys: names may hold dots or dashes, which a bare JSON path would misread.
    return "$" + "".join('."' + k.replace('"', '\\"') + '"' for k in keys)


def _json_value(column: Any, *keys: str) -> ColumnElement[Any]:
    """The JSON value at `keys` inside a JSON column, as SQLite returns it (typed scalar)."""
    return func.json_extract(column, _json_path(*keys))


def _each(column: Any, *keys: str, name: str = "je") -> Any:
    """The elements of the JSON value at `keys` in a JSON column, as a table (`value`).

    A list yields its items, a scalar yields itself (one row), a missing key no row; so
    single- and multi-label values, a score or a list of scores, go through one expression.
    The path goes to json_each itself: json_extract would hand it a bare string, not JSON.
    """
    return func.json_each(column, _json_path(*keys)).table_valued("value").alias(name)


def _any_element(column: Any, keys: Sequence[str], predicate: Any) -> ColumnElement[bool]:
    """True when some element of the JSON value at `keys` satisfies predicate."""
    each = _each(column, *keys)
    return exists(select(literal(1)).select_from(each).where(predicate(each.c.value)))


def _like_all(column: Any, words: Sequence[str]) -> ColumnElement[bool]:
    def escaped(word: str) -> str:
        return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

    return and_(*[column.like(f"%{escaped(w)}%", escape="\\") for w in words])


def _to_datetime(value: float | str) -> datetime:
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        # Elasticsearch dates take epoch milliseconds; small numbers are read as seconds.
        seconds = value / 1000 if value > 1e11 else value
        parsed = datetime.fromtimestamp(seconds, tz=UTC)
    # The server stores naive UTC datetimes.
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _range(expr: Any, ge: Any, le: Any) -> ColumnElement[bool]:
    parts = []
    if ge is not None:
        parts.append(expr >= ge)
    if le is not None:
        parts.append(expr <= le)
    return and_(true(), *parts)


def _status_values(values: Iterable[str], enum: type) -> list[Any]:
    out = []
    for v in values:
        try:
            out.append(enum(v))
        except ValueError:
            continue  # an unknown status matches nothing, as in Elasticsearch
    return out


@SearchEngine.register(ENGINE_NAME)
class SQLSearchEngine(SearchEngine):
    """The search-engine contract answered with SQL over the server's database."""

    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        async with AsyncSessionLocal() as db:
            return (await db.execute(text("SELECT 1"))).scalar() == 1

    async def info(self) -> dict[str, Any]:
        return {"engine": ENGINE_NAME, "backend": "the argilla server database"}

    # The database is the index: nothing to create, update or delete.
    async def create_index(self, dataset: Dataset) -> None:
        pass

    async def delete_index(self, dataset: Dataset) -> None:
        pass

    async def configure_metadata_property(
        self, dataset: Dataset, metadata_property: MetadataProperty
    ) -> None:
        pass

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        pass

    async def partial_record_update(self, record: Record, **update: Any) -> None:
        pass

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        pass

    async def update_record_response(self, response: Response) -> None:
        pass

    async def delete_record_response(self, response: Response) -> None:
        pass

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        pass

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        pass

    # -- aggregates ----------------------------------------------------------------------

    async def get_dataset_progress(self, dataset: Dataset) -> dict[str, int]:
        if dataset.is_draft:
            return {}
        query = (
            select(Record.status, func.count())
            .where(Record.dataset_id == dataset.id)
            .group_by(Record.status)
        )
        async with AsyncSessionLocal() as db:
            counts = {str(status.value): n for status, n in (await db.execute(query)).all()}
        return {"total": sum(counts.values()), **counts}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict[str, int]:
        if dataset.is_draft:
            return {}
        query = (
            select(Response.status, func.count())
            .join(Record, Record.id == Response.record_id)
            .where(Record.dataset_id == dataset.id, Response.user_id == user.id)
            .group_by(Response.status)
        )
        async with AsyncSessionLocal() as db:
            counts = {str(status.value): n for status, n in (await db.execute(query)).all()}
        return {"total": sum(counts.values()), **counts}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        value = _json_value(Record.metadata_, metadata_property.name)
        in_dataset = Record.dataset_id == metadata_property.dataset_id
        async with AsyncSessionLocal() as db:
            if metadata_property.type == MetadataPropertyType.terms:
                each = _each(Record.metadata_, metadata_property.name)
                query = (
                    select(each.c.value, func.count())
                    .select_from(Record)
                    .join(each, true())
                    .where(in_dataset, value.is_not(None))
                    .group_by(each.c.value)
                    .order_by(func.count().desc(), each.c.value)
                )
                rows = (await db.execute(query)).all()
                return TermsMetrics(
                    total=sum(n for _, n in rows),
                    values=[TermsMetrics.TermCount(term=str(t), count=n) for t, n in rows],
                )
            query = select(func.min(value), func.max(value)).where(in_dataset)
            low, high = (await db.execute(query)).one()
        if metadata_property.type == MetadataPropertyType.integer:
            return IntegerMetadataMetrics(
                min=None if low is None else int(low), max=None if high is None else int(high)
            )
        return FloatMetadataMetrics(
            min=None if low is None else float(low), max=None if high is None else float(high)
        )

    # -- search --------------------------------------------------------------------------

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: UUID | str | None = None,
    ) -> SearchResponses:
        where: list[ColumnElement[bool]] = [Record.dataset_id == dataset.id]
        if query is not None:
            where.append(self._text_condition(query))
        if filter is not None:
            where.append(self._filter_condition(filter, dataset))
        order_by: list[Any] = [self._order_expression(o, dataset) for o in sort or []]
        if not sort and user_id is not None:
            # Elasticsearch shuffles per user; a user-specific rotation of the id order spreads
            # annotators over different records too, and stays stable from page to page.
            pivot = UUID(hashlib.md5(str(user_id).encode()).hexdigest())
            order_by.append((Record.id < pivot).asc())
            order_by.append(Record.id.asc())
        order_by += [Record.inserted_at.asc(), Record.id.asc()]

        select_ids = select(Record.id).where(*where)
        async with AsyncSessionLocal() as db:
            total = (
                await db.execute(select(func.count()).select_from(select_ids.subquery()))
            ).scalar_one()
            ids = (
                await db.execute(select_ids.order_by(*order_by).offset(offset).limit(limit))
            ).scalars()
            items = [SearchResponseItem(record_id=rid, score=None) for rid in ids]
        return SearchResponses(items=items, total=total)

    async def similarity_search(self, *args: Any, **kwargs: Any) -> SearchResponses:
        raise UnprocessableEntityError(
            "similarity (vector) search needs Elasticsearch or OpenSearch; this server runs the "
            "'sql' search engine, which answers filters, sorting and text search only"
        )

    # -- building blocks -----------------------------------------------------------------

    @staticmethod
    def _text_condition(query: TextQuery | str) -> ColumnElement[bool]:
        if isinstance(query, str):
            query = TextQuery(q=query)
        words = [w for w in query.q.replace('"', " ").split() if w]
        if not words:
            return true()
        if query.field:
            # A text field is a JSON string; a chat field a JSON list, matched on its JSON text.
            return _like_all(_json_value(Record.fields, query.field), words)
        each = func.json_each(Record.fields).table_valued("value").alias("fe")
        # Every word must occur, each in some field (not necessarily the same one).
        return and_(
            *[
                exists(select(literal(1)).select_from(each).where(_like_all(each.c.value, [w])))
                for w in words
            ]
        )

    def _filter_condition(self, filter: Filter, dataset: Dataset) -> ColumnElement[bool]:
        if isinstance(filter, AndFilter):
            return and_(true(), *[self._filter_condition(f, dataset) for f in filter.filters])
        scope = filter.scope
        if isinstance(scope, RecordFilterScope):
            return self._record_condition(filter, scope.property)
        if isinstance(scope, MetadataFilterScope):
            value = _json_value(Record.metadata_, scope.metadata_property)
            if isinstance(filter, TermsFilter):
                return _any_element(
                    Record.metadata_, [scope.metadata_property], lambda v: v.in_(filter.values)
                )
            return _range(value, filter.ge, filter.le)
        if isinstance(scope, SuggestionFilterScope):
            return self._suggestion_condition(filter, scope, dataset)
        if isinstance(scope, ResponseFilterScope):
            return self._response_condition(filter, scope)
        raise ValueError(f"cannot filter on scope {scope!r}")

    @staticmethod
    def _record_condition(filter: TermsFilter | RangeFilter, prop: str) -> ColumnElement[bool]:
        column = getattr(Record, prop)
        if isinstance(filter, TermsFilter):
            if prop == "status":
                return column.in_(_status_values(filter.values, RecordStatus))
            if prop == "id":
                ids = []
                for v in filter.values:
                    try:
                        ids.append(UUID(v))
                    except ValueError:
                        continue
                return column.in_(ids)
            return column.in_(filter.values)
        ge, le = filter.ge, filter.le
        if prop in _DATE_COLUMNS:
            ge = None if ge is None else _to_datetime(ge)
            le = None if le is None else _to_datetime(le)
        return _range(column, ge, le)

    @staticmethod
    def _suggestion_condition(
        filter: TermsFilter | RangeFilter, scope: SuggestionFilterScope, dataset: Dataset
    ) -> ColumnElement[bool]:
        prop = scope.property or "value"
        base = (
            select(literal(1))
            .select_from(Suggestion)
            .join(Question, Question.id == Suggestion.question_id)
            .where(
                Suggestion.record_id == Record.id,
                Question.name == scope.question,
                Question.dataset_id == dataset.id,
            )
        )
        if prop in ("agent", "type"):
            column = getattr(Suggestion, prop)
            if isinstance(filter, TermsFilter):
                return exists(base.where(column.in_(filter.values)))
            return false()
        json_column = Suggestion.value if prop == "value" else Suggestion.score
        each = _each(json_column, name="se")
        if isinstance(filter, TermsFilter):
            match = each.c.value.in_(filter.values)
        else:
            match = _range(each.c.value, filter.ge, filter.le)
        return exists(base.join(each, true()).where(match))

    @staticmethod
    def _response_condition(
        filter: TermsFilter | RangeFilter, scope: ResponseFilterScope
    ) -> ColumnElement[bool]:
        by_user = [Response.user_id == scope.user.id] if scope.user is not None else []
        of_record = [Response.record_id == Record.id, *by_user]
        if scope.question:
            value = _json_value(Response.values, scope.question, "value")
            each = _each(Response.values, scope.question, "value", name="re")
            if isinstance(filter, TermsFilter):
                match = each.c.value.in_(filter.values)
            else:
                match = _range(each.c.value, filter.ge, filter.le)
            return exists(
                select(literal(1))
                .select_from(Response)
                .join(each, true())
                .where(*of_record, value.is_not(None), match)
            )
        if scope.property != "status" or not isinstance(filter, TermsFilter):
            raise ValueError(f"cannot filter responses on {scope!r} with {type(filter).__name__}")
        wanted = set(filter.values)
        parts: list[ColumnElement[bool]] = []
        if ResponseStatusFilter.pending in wanted:
            # Pending = no response from this user (from anyone, without a user).
            parts.append(not_(exists(select(literal(1)).where(*of_record))))
        statuses = _status_values(wanted - {ResponseStatusFilter.pending}, ResponseStatus)
        if statuses:
            parts.append(
                exists(select(literal(1)).where(*of_record, Response.status.in_(statuses)))
            )
        return or_(false(), *parts)

    @staticmethod
    def _order_expression(order: Order, dataset: Dataset) -> Any:
        scope: FilterScope = order.scope
        expr: Any
        if isinstance(scope, RecordFilterScope):
            expr = getattr(Record, scope.property)
        elif isinstance(scope, MetadataFilterScope):
            expr = _json_value(Record.metadata_, scope.metadata_property)
        elif isinstance(scope, SuggestionFilterScope):
            prop = scope.property or "value"
            column = (
                getattr(Suggestion, prop)
                if prop in ("agent", "type")
                else _json_value(getattr(Suggestion, prop))
            )
            expr = (
                select(column)
                .join(Question, Question.id == Suggestion.question_id)
                .where(
                    Suggestion.record_id == Record.id,
                    Question.name == scope.question,
                    Question.dataset_id == dataset.id,
                )
                .limit(1)
                .scalar_subquery()
            )
        elif isinstance(scope, ResponseFilterScope):
            column = (
                _json_value(Response.values, scope.question, "value")
                if scope.question
                else Response.status
            )
            by_user = [Response.user_id == scope.user.id] if scope.user is not None else []
            # Elasticsearch sorts numbers on the mean over the record's responses ("mode":
            # "avg"); labels have no mean, so the smallest value. For one user's own
            # response (the UI's case) both are that response's value.
            expr = (
                select(func.min(column))
                .where(Response.record_id == Record.id, *by_user)
                .scalar_subquery()
            )
        else:
            raise ValueError(f"cannot sort on scope {scope!r}")  # noqa: TRY004 (Argilla's own error type)
        return expr.desc() if order.order == SortOrder.desc else expr.asc()
