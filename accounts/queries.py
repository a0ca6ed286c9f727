"""Filtering on a long list of values, as cheaply as each database allows.

The authority sweep (``accounts.authority``) asks about every socket of an instance once
a second: thousands of token ids, session keys and user ids. On PostgreSQL the whole list
travels as one array parameter (``= ANY(%s)``), which the server plans once; measured at
10,000 values it cost a third of an ``IN`` list of 10,000 parameters (docs/auth.md). SQLite
caps bound parameters, so there the list goes in chunks of ``IN``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connection
from django.db.models import Field, Lookup, Model, QuerySet

M = TypeVar("M", bound=Model)

if TYPE_CHECKING:
    _LookupBase = Lookup[Any]
else:
    _LookupBase = Lookup

# Values per ``IN`` list where bound parameters are capped (SQLite: 999 in Django's features).
_MAX_CHUNK = 10_000


class AnyOf(_LookupBase):
    """``field = ANY(%s)`` with the list as one PostgreSQL array parameter."""

    lookup_name = "any_of"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", (*lhs_params, list(self.rhs))


def matching(queryset: QuerySet[M], field: str, values: Sequence[Any]) -> Iterator[QuerySet[M]]:
    """``queryset`` filtered to ``field`` in ``values``: one query's worth at a time."""
    if not values:
        return
    if connection.vendor == "postgresql":
        meta = queryset.model._meta
        model_field = meta.pk if field == "pk" else meta.get_field(field)
        assert isinstance(model_field, Field)
        if AnyOf.lookup_name not in model_field.get_lookups():
            model_field.register_lookup(AnyOf)
        yield queryset.filter(**{f"{field}__{AnyOf.lookup_name}": list(values)})
        return
    limit = connection.features.max_query_params
    chunk = min(limit - 10, _MAX_CHUNK) if limit else _MAX_CHUNK
    for start in range(0, len(values), chunk):
        yield queryset.filter(**{f"{field}__in": values[start : start + chunk]})
