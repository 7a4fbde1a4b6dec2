"""Zuora's error dialects, and safe query text."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from zuora.errors import (
    Reason,
    ZuoraAuthError,
    ZuoraNotFound,
    ZuoraPermanentError,
    ZuoraRateLimited,
    ZuoraTransientError,
    error_for,
    parse_error_body,
)
from zuora.query import QueryError, identifier, sql_literal, zoql_literal


@pytest.mark.parametrize(
    ("body", "reasons"),
    [
        ('{"success":false,"reasons":[{"code":"58730222","message":"orderDate may not be null"}]}', [Reason("58730222", "orderDate may not be null")]),
        ('{"success":false,"reasons":[{"code":53100320,"message":"x"}]}', [Reason("53100320", "x")]),
        ('{"Errors":[{"Code":"INVALID_VALUE","Message":"bad"}]}', [Reason("INVALID_VALUE", "bad")]),
        ('{"faultcode":"fns:INVALID_FIELD","faultstring":"invalid field for query: Invoice.x"}', [Reason("INVALID_FIELD", "invalid field for query: Invoice.x")]),
        ('{"code":"REQUEST_EXCEEDED_LIMIT","message":"Your total number of concurrent requests..."}', [Reason("REQUEST_EXCEEDED_LIMIT", "Your total number of concurrent requests...")]),
        ('{"message":"Authentication error"}', [Reason("", "Authentication error")]),
        ("<html>Bad Gateway</html>", [Reason("", "<html>Bad Gateway</html>")]),
        ("", []),
    ],
)  # fmt: skip
def test_every_error_dialect_is_read(body: str, reasons: list[Reason]) -> None:
    assert parse_error_body(body) == reasons


@pytest.mark.parametrize(
    ("status", "codes", "kind"),
    [
        (429, [], ZuoraRateLimited),
        (200, ["REQUEST_EXCEEDED_LIMIT"], ZuoraRateLimited),
        (500, [], ZuoraTransientError),
        (200, ["50000050"], ZuoraTransientError),  # locking contention
        (200, ["50000061"], ZuoraTransientError),  # temporary error
        (404, [], ZuoraNotFound),
        (200, ["50000040"], ZuoraNotFound),
        (401, [], ZuoraAuthError),
        (200, ["50000011"], ZuoraAuthError),
        (400, ["58730222"], ZuoraPermanentError),
        (415, [], ZuoraPermanentError),
    ],
)
def test_errors_are_typed_by_status_and_reason_code(
    status: int, codes: list[str], kind: type
) -> None:
    error = error_for(status, [Reason(c, "m") for c in codes])
    assert type(error) is kind
    assert error.retryable == issubclass(kind, ZuoraTransientError)


@pytest.mark.parametrize("name", ["Name", "SupportTier__c", "account_id", "x1"])
def test_identifiers_pass(name: str) -> None:
    assert identifier(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "Name; drop table x", "a b", "Name'", "a.b", "Name--", "x" * 200, None]
)
def test_anything_but_an_identifier_is_refused(name: object) -> None:
    with pytest.raises(QueryError, match="not a valid field or object name"):
        identifier(name)  # type: ignore[arg-type]


def test_values_become_one_literal_whatever_they_contain() -> None:
    hostile = "x' or Name != '"
    assert zoql_literal(hostile) == "'x\\' or Name != \\''"
    assert sql_literal(hostile) == "'x'' or Name != '''"
    assert zoql_literal("back\\slash'") == "'back\\\\slash\\''"
    assert sql_literal(None) == "NULL" and zoql_literal(None) == "null"
    assert sql_literal(3) == "3" and zoql_literal(True) == "true"
    assert sql_literal(date(2026, 1, 2)) == "DATE '2026-01-02'"
    berlin = timezone(timedelta(hours=1))
    moment = datetime(2026, 1, 2, 4, 5, 6, 789000, tzinfo=berlin)
    assert zoql_literal(moment) == "'2026-01-02T03:05:06+00:00'"
    assert sql_literal(moment) == "TIMESTAMP '2026-01-02 03:05:06.789 UTC'"


@pytest.mark.parametrize("value", [datetime(2026, 1, 1), "line\x00break", object(), float("nan")])
def test_values_that_cannot_be_literals_are_refused(value: object) -> None:
    with pytest.raises(QueryError):
        zoql_literal(value)
    with pytest.raises(QueryError):
        sql_literal(value)


def test_utc_helper_is_consistent() -> None:
    assert (
        sql_literal(datetime(2026, 1, 1, tzinfo=UTC)) == "TIMESTAMP '2026-01-01 00:00:00.000 UTC'"
    )
