"""The settings object: defaults, parsing, validation and secret hygiene."""

from __future__ import annotations

import pytest

from zuora_sync.settings import (
    SANDBOX_CUSTOM_FIELDS,
    SANDBOX_URL,
    ConfigError,
    get_settings,
    load_settings,
    mask_database_url,
)


def test_defaults_point_at_the_embedded_warehouse_and_the_sandbox() -> None:
    settings = load_settings()
    assert settings.DATABASE_URL == "sqlite:///zuora_sync.db"
    assert settings.ZUORA_BASE_URL == SANDBOX_URL
    assert settings.ZUORA_TRACKED_FIELDS == SANDBOX_CUSTOM_FIELDS
    assert settings.ZUORA_QUERY_API == "dataquery"
    assert settings.ZUORA_MAX_CONCURRENCY == 20
    assert settings.CALLOUT_USERNAME is None


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw@db.internal:5432/cache")
    monkeypatch.setenv("ZUORA_TRACKED_FIELDS", " Region__c , SeatOverride__c,Region__c ")
    monkeypatch.setenv("ZUORA_BASE_URL", "https://rest.apisandbox.zuora.com/")
    monkeypatch.setenv("ZUORA_QUERY_API", "zoql")
    settings = get_settings()
    assert settings.DATABASE_URL == "postgresql+psycopg2://app:pw@db.internal:5432/cache"
    assert settings.is_postgres
    assert settings.ZUORA_TRACKED_FIELDS == ("Region__c", "SeatOverride__c")
    assert settings.ZUORA_BASE_URL == "https://rest.apisandbox.zuora.com"
    assert settings.ZUORA_QUERY_API == "zoql"


def test_dotenv_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ZUORA_MAX_CONCURRENCY=7\n")
    assert load_settings().ZUORA_MAX_CONCURRENCY == 7


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "not a url at all", "invalid setting DATABASE_URL: not a database URL"),
        ("DATABASE_URL", "mysql://x/y", "unsupported database 'mysql'"),
        (
            "ZUORA_BASE_URL",
            "rest.zuora.com",
            "invalid setting ZUORA_BASE_URL: must be an http(s) URL",
        ),
        (
            "ZUORA_TRACKED_FIELDS",
            "Region__c,drop table",
            "not custom field names (Name__c): drop table",
        ),
        ("ZUORA_QUERY_API", "soap", "invalid setting ZUORA_QUERY_API"),
        ("ZUORA_MAX_CONCURRENCY", "0", "invalid setting ZUORA_MAX_CONCURRENCY"),
        ("CALLOUT_USERNAME", "zuora", "set both CALLOUT_USERNAME and CALLOUT_PASSWORD"),
    ],
)
def test_a_bad_value_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_secrets_stay_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db-pass-123@db/cache")
    monkeypatch.setenv("ZUORA_CLIENT_SECRET", "client-secret-456")
    monkeypatch.setenv("CALLOUT_USERNAME", "zuora")
    monkeypatch.setenv("CALLOUT_PASSWORD", "callout-pass-789")
    settings = load_settings()
    shown = repr(settings) + str(settings) + str(settings.model_dump())
    for secret in ("db-pass-123", "client-secret-456", "callout-pass-789"):
        assert secret not in shown
    assert settings.database_url_masked == "postgresql+psycopg2://app:***@db/cache"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:db-pass-123",  # the host forgotten: the password reads as a port
        "postgresql//app:db-pass-123@db/cache",  # not parseable at all
        "postgresql://app:db-pass-123@db:port/cache",
    ],
)
def test_a_malformed_database_url_is_refused_without_quoting_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "invalid setting DATABASE_URL: not a database URL" in str(caught.value)
    assert "db-pass-123" not in str(caught.value)
    assert mask_database_url(url) == "<invalid url>"
