"""Safe building blocks for query text sent to Zuora (ZOQL and Data Query SQL).

Query text is assembled from a fixed shape plus two kinds of holes: identifiers (object and
field names), which must match a strict pattern, and values, which are rendered as escaped
literals. Nothing that comes from a parameter can change the query's shape: a name that is
not an identifier is refused with `QueryError`, and a value can only ever be one literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal

_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class QueryError(ValueError):
    """A name or value that cannot be placed in a query safely."""


def identifier(name: str) -> str:
    """`name` itself if it is a plain identifier (letters, digits, underscore)."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise QueryError(f"not a valid field or object name: {name!r}")
    return name


def identifiers(names: Iterable[str]) -> list[str]:
    return [identifier(name) for name in names]


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise QueryError("a query value may not contain control characters")
    return value


def _timestamp(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise QueryError("a query timestamp must carry its time zone")
    return value.astimezone(UTC)


def zoql_literal(value: object) -> str:
    """A ZOQL literal: strings quoted with `\\` escapes, times in ISO 8601 UTC."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal) or (isinstance(value, float) and value == value):
        return str(value)
    if isinstance(value, datetime):
        return "'" + _timestamp(value).strftime("%Y-%m-%dT%H:%M:%S+00:00") + "'"
    if isinstance(value, date):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        escaped = _text(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    raise QueryError(f"cannot use a {type(value).__name__} as a ZOQL value")


def sql_literal(value: object) -> str:
    """A Data Query (SQL) literal: strings with doubled quotes, typed date and time literals."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | Decimal) or (isinstance(value, float) and value == value):
        return str(value)
    if isinstance(value, datetime):
        return "TIMESTAMP '" + _timestamp(value).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + _text(value).replace("'", "''") + "'"
    raise QueryError(f"cannot use a {type(value).__name__} as an SQL value")
