"""Structured logs: one line per event, and no credential ever printed."""

from __future__ import annotations

import json
import logging

import pytest

from zuora_sync import logs


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> logging.Logger:
    logs.configure("INFO", "json")
    return logging.getLogger("zs.test")


def test_json_lines_carry_the_event_and_its_fields(
    captured: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    captured.info("callout.stored", extra=logs.fields(notification_id="n-1", latency_ms=3.2))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(line)
    assert (doc["event"], doc["notification_id"], doc["latency_ms"]) == (
        "callout.stored",
        "n-1",
        3.2,
    )
    assert doc["level"] == "info" and doc["logger"] == "zs.test"


def test_credentials_are_masked_wherever_they_hide(
    captured: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    captured.warning(
        "request failed Authorization: Basic dXNlcjpodW50ZXIy to postgresql://app:hunter2@db/x",
        extra=logs.fields(password="hunter2", client_secret="s3cr3t", header="Bearer abc.def"),
    )
    err = capsys.readouterr().err
    for secret in ("hunter2", "s3cr3t", "dXNlcjpodW50ZXIy", "abc.def"):
        assert secret not in err
    assert "Basic ***" in err and "app:***@db" in err


def test_text_format_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text")
    logging.getLogger("zs.test").info("drain.run", extra=logs.fields(claimed=5))
    assert capsys.readouterr().err.strip().endswith("zs.test: drain.run claimed=5")
