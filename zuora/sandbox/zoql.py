"""ZOQL for `POST /v1/action/query` and `/v1/action/queryMore`.

The subset a sync needs: `select F[, F...] from Object [where ...]` with `=`, `!=`, `<`,
`>`, `<=`, `>=`, `and`, `or`, parentheses, and string, number, boolean and `null` literals,
on Account, Subscription, RatePlan and RatePlanCharge. A query is translated to SQL over the
tenant's tables and paged by record id, so a queryLocator (`<32 hex>-<offset>`) is a cheap
cursor: it remembers the last id served. Records use the ZOQL field names, leave null fields
out and always carry `Id`; `size` is the total number of matching records.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from typing import Any

from zuora.sandbox.schema import Column, Table, format_datetime

MAX_BATCH = 2000
MAX_QUERY_LENGTH = 10_000
MAX_CONDITIONS = 200
_KEYWORDS = ("select", "from", "where", "and", "or", "null", "true", "false")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*')
      | (?P<num>-?\d+(?:\.\d+)?)
      | (?P<op>!=|<>|>=|<=|=|<|>|\(|\)|,|\*)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
    )""",
    re.VERBOSE,
)


class ZoqlError(Exception):
    """A query Zuora would refuse; `fault` is its fault code (MALFORMED_QUERY, ...)."""

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(message)
        self.fault = fault
        self.message = message

    def body(self) -> dict[str, Any]:
        """The fault body Zuora's action endpoints answer with (HTTP 400)."""
        return {
            "faultcode": f"fns:{self.fault}",
            "faultstring": self.message,
            "detail": {
                "MalformedQueryFault": {"FaultCode": self.fault, "FaultMessage": self.message}
            },
        }


def _malformed(detail: str = "") -> ZoqlError:
    suffix = f": {detail}" if detail else ""
    return ZoqlError("MALFORMED_QUERY", f"You have an error in your ZOQL syntax{suffix}")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokenize(query: str) -> list[_Tok]:
    out = []
    pos = 0
    query = query.rstrip().rstrip(";")
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            raise _malformed(f"unexpected {query[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    return out


@dataclass
class Query:
    """A parsed ZOQL query, ready to run as SQL."""

    table: Table
    fields: list[Column]
    where_sql: str
    args: list[Any]


class _Parser:
    def __init__(
        self, text: str, tables: dict[str, Table], lowercase_keywords: bool, tz: timezone
    ) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.tables = tables
        self.strict = lowercase_keywords
        self.tz = tz
        self.table: Table | None = None
        self.conditions = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise _malformed("the query ends too early")
        self.i += 1
        return tok

    def is_keyword(self, tok: _Tok | None, word: str) -> bool:
        if tok is None or tok.kind != "word" or tok.text.lower() != word:
            return False
        if self.strict and tok.text != word:
            raise _malformed(f"keywords must be lowercase: {tok.text}")
        return True

    def keyword(self, word: str) -> None:
        if not self.is_keyword(self.take(), word):
            raise _malformed(f"expected {word}")

    def parse(self) -> Query:
        self.keyword("select")
        names = [self.take()]
        while self.peek() is not None and self.peek().kind == "op" and self.peek().text == ",":  # type: ignore[union-attr]
            self.take()
            names.append(self.take())
        self.keyword("from")
        object_tok = self.take()
        if object_tok.kind != "word":
            raise _malformed("expected an object name after from")
        table = self.tables.get(object_tok.text.lower())
        if table is None:
            raise ZoqlError("INVALID_TYPE", f"invalid type for query: {object_tok.text}")
        self.table = table
        fields: list[Column] = []
        for tok in names:
            if tok.kind == "op" and tok.text == "*":
                raise _malformed("the * wildcard is not supported; list the fields")
            if tok.kind != "word" or tok.text.lower() in _KEYWORDS:
                raise _malformed(f"expected a field name, found {tok.text!r}")
            fields.append(self.column(tok.text))
        where_sql, args = "1", list[Any]()
        if self.peek() is not None:
            self.keyword("where")
            where_sql, args = self.or_()
            if self.peek() is not None:
                raise _malformed(f"unexpected {self.peek().text!r}")  # type: ignore[union-attr]
        return Query(table, fields, where_sql, args)

    def column(self, name: str) -> Column:
        assert self.table is not None
        if "." in name:
            owner, _, name = name.partition(".")
            if owner.lower() != self.table.sql:
                raise ZoqlError("INVALID_FIELD", f"invalid field for query: {owner}.{name}")
        col = self.table.column(name)
        if col is None:
            raise ZoqlError(
                "INVALID_FIELD", f"invalid field for query: {self.table.object_name}.{name}"
            )
        return col

    def or_(self) -> tuple[str, list[Any]]:
        sql, args = self.and_()
        while self.is_keyword(self.peek(), "or"):
            self.take()
            right, more = self.and_()
            sql, args = f"({sql} OR {right})", args + more
        return sql, args

    def and_(self) -> tuple[str, list[Any]]:
        sql, args = self.atom()
        while self.is_keyword(self.peek(), "and"):
            self.take()
            right, more = self.atom()
            sql, args = f"({sql} AND {right})", args + more
        return sql, args

    def atom(self) -> tuple[str, list[Any]]:
        tok = self.take()
        if tok.kind == "op" and tok.text == "(":
            sql, args = self.or_()
            close = self.take()
            if close.text != ")":
                raise _malformed("expected )")
            return sql, args
        if tok.kind != "word" or tok.text.lower() in _KEYWORDS:
            raise _malformed(f"expected a field name, found {tok.text!r}")
        col = self.column(tok.text)
        op = self.take()
        if op.kind != "op" or op.text not in ("=", "!=", "<>", ">=", "<=", ">", "<"):
            raise _malformed(f"expected a comparison after {tok.text}")
        value = self.literal(col)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise _malformed(f"at most {MAX_CONDITIONS} conditions")
        name = col.sql
        if value is None:
            if op.text == "=":
                return f"{name} IS NULL", []
            if op.text in ("!=", "<>"):
                return f"{name} IS NOT NULL", []
            raise _malformed("null can only be compared with = or !=")
        sql_op = "!=" if op.text == "<>" else op.text
        if sql_op == "!=":
            # ZOQL's != keeps records whose field is null (SQL's would drop them).
            return f"({name} IS NULL OR {name} != ?)", [value]
        return f"{name} {sql_op} ?", [value]

    def literal(self, col: Column) -> Any:
        tok = self.take()
        if tok.kind == "str":
            text = re.sub(r"\\(.)", r"\1", tok.text[1:-1])
            return self.coerce(col, text)
        if tok.kind == "num":
            number = float(tok.text) if "." in tok.text else int(tok.text)
            if col.kind == "text":
                return tok.text
            return number
        if self.is_keyword(tok, "null"):
            return None
        if self.is_keyword(tok, "true") or self.is_keyword(tok, "false"):
            if col.kind != "bool":
                raise ZoqlError("INVALID_VALUE", f"invalid value for {col.name}: {tok.text}")
            return 1 if tok.text.lower() == "true" else 0
        raise _malformed(f"expected a value, found {tok.text!r}")

    def coerce(self, col: Column, text: str) -> Any:
        """Turn a quoted literal into the stored form of the column it is compared with."""
        if col.kind == "datetime":
            return normalise_datetime(text, self.tz, col.name)
        if col.kind == "date":
            try:
                return datetime.fromisoformat(text[:10]).date().isoformat()
            except ValueError:
                raise ZoqlError("INVALID_VALUE", f"invalid date for {col.name}: {text}") from None
        if col.kind in ("int", "real"):
            try:
                return float(text) if col.kind == "real" else int(text)
            except ValueError:
                raise ZoqlError("INVALID_VALUE", f"invalid number for {col.name}: {text}") from None
        if col.kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ZoqlError("INVALID_VALUE", f"invalid boolean for {col.name}: {text}")
            return 1 if text.lower() == "true" else 0
        return text


def normalise_datetime(text: str, tz: timezone, name: str = "value") -> str:
    """A datetime literal in the stored form (tenant offset, milliseconds).

    A literal without an offset is read in the tenant's time zone, as Zuora reads it.
    """
    raw = text.strip().replace(" ", "T", 1)
    if raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ZoqlError("INVALID_VALUE", f"invalid datetime for {name}: {text}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return format_datetime(moment.astimezone(UTC), tz)


def parse(text: str, tables: dict[str, Table], *, lowercase_keywords: bool, tz: timezone) -> Query:
    """Parse a ZOQL query or raise `ZoqlError` with Zuora's fault code."""
    if not isinstance(text, str) or not text.strip():
        raise _malformed("the query is empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise _malformed(f"the query is longer than {MAX_QUERY_LENGTH} characters")
    return _Parser(text, tables, lowercase_keywords, tz).parse()


@dataclass
class Cursor:
    """The server side of a queryLocator."""

    id: str
    query: Query
    size: int
    served: int = 0
    last_id: str = ""
    touched: float = field(default_factory=time.monotonic)


class Zoql:
    """Runs queries and keeps their cursors until they idle out."""

    def __init__(self, con: sqlite3.Connection, idle_s: float) -> None:
        self.con = con
        self.idle_s = idle_s
        self.cursors: dict[str, Cursor] = {}

    def query(self, parsed: Query, batch: int) -> dict[str, Any]:
        self._expire()
        cursor = Cursor(uuid.uuid4().hex, parsed, self._count(parsed))
        return self._page(cursor, batch)

    def _count(self, parsed: Query) -> int:
        """The total (`size`): base rows + overlay rows - masked base rows, each counted
        on its own table (a count through the united view would be several times slower)."""
        table, where, args = parsed.table.sql, parsed.where_sql, parsed.args

        def one(sql: str) -> int:
            return int(self.con.execute(sql, args).fetchone()[0])

        return (
            one(f"SELECT count(*) FROM b.{table} WHERE {where}")
            + one(f"SELECT count(*) FROM main.{table} WHERE {where}")
            - one(
                f"SELECT count(*) FROM b.{table} WHERE id IN (SELECT id FROM main.masked) "
                f"AND ({where})"
            )
        )

    def query_more(self, locator: str, batch: int) -> dict[str, Any]:
        self._expire()
        ident, _, offset = locator.partition("-")
        cursor = self.cursors.get(ident)
        if cursor is None or offset != str(cursor.served):
            raise ZoqlError("INVALID_QUERY_LOCATOR", "invalid queryLocator: " + locator)
        return self._page(cursor, batch)

    def _page(self, cursor: Cursor, batch: int) -> dict[str, Any]:
        parsed = cursor.query
        names = ["id", *(c.sql for c in parsed.fields if c.sql != "id")]
        cols = {c.sql: c for c in parsed.table.columns}
        rows = self.con.execute(
            f"SELECT {', '.join(names)} FROM {parsed.table.sql} "
            f"WHERE ({parsed.where_sql}) AND id > ? ORDER BY id LIMIT ?",
            [*parsed.args, cursor.last_id, batch],
        ).fetchall()
        records = []
        for row in rows:
            record: dict[str, Any] = {}
            for name, value in zip(names, row, strict=True):
                if value is None:
                    continue
                col = cols[name]
                record[col.name] = bool(value) if col.kind == "bool" else value
            records.append(record)
        cursor.served += len(records)
        cursor.touched = time.monotonic()
        if rows:
            cursor.last_id = rows[-1][0]
        body: dict[str, Any] = {"records": records, "size": cursor.size}
        if cursor.served < cursor.size and len(rows) == batch:
            self.cursors[cursor.id] = cursor
            body["queryLocator"] = f"{cursor.id}-{cursor.served}"
            body["done"] = False
        else:
            self.cursors.pop(cursor.id, None)
            body["done"] = True
        return body

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.idle_s
        for key in [k for k, c in self.cursors.items() if c.touched < cutoff]:
            del self.cursors[key]
