"""The one settings object: environment variables, optionally a `.env` file.

Every part of the project (CLI, webhook, flows, sandbox, benchmarks) reads its configuration
through `get_settings()`, so a value means the same thing everywhere and a bad value is caught
once, with a message that names the variable.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SANDBOX_PORT = 8900
SANDBOX_URL = f"http://127.0.0.1:{SANDBOX_PORT}"
SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"  # noqa: S105 - the simulated tenant's documented default
SANDBOX_CUSTOM_FIELDS = ("SupportTier__c", "SeatOverride__c", "ContractOwner__c")

CUSTOM_FIELD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,60}__c$")

Environment = Literal["dev", "test", "staging", "production"]


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line naming the setting."""


def normalise_database_url(raw: str) -> str:
    """Check a database URL and pin the driver the project supports for it."""
    try:
        url: URL = make_url(raw)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    if backend == "sqlite":
        return url.set(drivername="sqlite").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}; use postgresql://... or sqlite:///...")


def mask_database_url(raw: str) -> str:
    """The URL with its password replaced, for logs and reprs."""
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"


class Settings(BaseSettings):
    """zuora-sync configuration. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=True,
    )

    ZUORA_SYNC_ENV: Environment = Field(
        "production",
        description="dev relaxes safety checks (e.g. an unauthenticated webhook); anything else "
        "is treated as a real deployment",
    )

    DATABASE_URL: str = Field(
        "sqlite:///zuora_sync.db",
        description="the warehouse: postgresql+psycopg2://user:pass@host/db or sqlite:///file.db",
    )

    ZUORA_BASE_URL: str = Field(SANDBOX_URL, description="Zuora REST base URL")
    ZUORA_CLIENT_ID: SecretStr = Field(SecretStr(SANDBOX_CLIENT_ID))
    ZUORA_CLIENT_SECRET: SecretStr = Field(SecretStr(SANDBOX_CLIENT_SECRET))
    ZUORA_TRACKED_FIELDS: Annotated[tuple[str, ...], NoDecode] = Field(
        SANDBOX_CUSTOM_FIELDS,
        description="comma-separated subscription custom fields (Name__c) whose changes matter",
    )
    ZUORA_QUERY_API: Literal["dataquery", "zoql"] = "dataquery"
    ZUORA_SANDBOX_CACHE_DIR: Path = Field(
        Path.home() / ".cache" / "zuora-sync" / "sandbox",
        description="where the sandbox keeps large seeded data sets it has built (reused)",
    )
    ZUORA_MAX_CONCURRENCY: int = Field(20, ge=1, le=200)

    CALLOUT_USERNAME: SecretStr | None = Field(
        None, description="HTTP Basic username Zuora's callout presents (no colon)"
    )
    CALLOUT_PASSWORD: SecretStr | None = Field(
        None, description="HTTP Basic password Zuora's callout presents"
    )

    # Tenant setup (`zuora-sync zuora setup-callout`); see docs/zuora_callouts.md.
    CALLOUT_URL: str | None = Field(
        None,
        description="the public https URL of this deployment's webhook that Zuora's callout "
        "calls (the base URL, or the full endpoint URL)",
    )
    ZUORA_TENANT_ID: str | None = Field(
        None,
        pattern=r"^\d{1,12}$",
        description="the tenant id the Zuora credentials must belong to; required by "
        "setup-callout for a profile that does not name one",
    )
    ZUORA_PROFILES_FILE: Path | None = Field(
        None,
        description="a TOML file of tenant profiles (tenant_id, base_url, callout_url) that "
        "adds to or overrides the built-in dev, staging and production",
    )

    # The inbox queue's policy. Defaults suit a one-minute drain schedule.
    INBOX_LEASE_SECONDS: float = Field(120.0, gt=0, description="how long a claim is held")
    INBOX_MAX_ATTEMPTS: int = Field(12, ge=1, le=100)
    INBOX_RETRY_BASE_SECONDS: float = Field(2.0, gt=0)
    INBOX_RETRY_MAX_SECONDS: float = Field(600.0, gt=0)

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "text"

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("ZUORA_BASE_URL")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as https://rest.zuora.com")
        return value

    @field_validator("ZUORA_TRACKED_FIELDS", mode="before")
    @classmethod
    def _split_tracked_fields(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("ZUORA_TRACKED_FIELDS")
    @classmethod
    def _check_tracked_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not CUSTOM_FIELD_RE.match(name)]
        if bad:
            raise ValueError(f"not custom field names (Name__c): {', '.join(bad)}")
        return tuple(dict.fromkeys(value))

    @field_validator("CALLOUT_USERNAME")
    @classmethod
    def _check_callout_username(cls, value: SecretStr | None) -> SecretStr | None:
        # HTTP Basic sends "user:password"; a colon in the user name cannot be told apart.
        if value is not None and ":" in value.get_secret_value():
            raise ValueError("must not contain a colon (HTTP Basic cannot carry one)")
        return value

    @model_validator(mode="after")
    def _callout_credentials_come_in_pairs(self) -> Settings:
        if (self.CALLOUT_USERNAME is None) != (self.CALLOUT_PASSWORD is None):
            raise ValueError("set both CALLOUT_USERNAME and CALLOUT_PASSWORD, or neither")
        return self

    @property
    def is_dev(self) -> bool:
        return self.ZUORA_SYNC_ENV in ("dev", "test")

    @property
    def is_postgres(self) -> bool:
        return self.DATABASE_URL.startswith("postgresql")

    @property
    def database_url_masked(self) -> str:
        return mask_database_url(self.DATABASE_URL)

    @field_serializer("DATABASE_URL")
    def _mask_database_url(self, value: str) -> str:
        # Like SecretStr: a dump of the settings never carries the password.
        return mask_database_url(value)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (self.database_url_masked if name == "DATABASE_URL" else value)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    message = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid setting {where}: {message}{suffix}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning a validation error into a one-line `ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
