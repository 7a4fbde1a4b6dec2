"""Tenant profiles: which Zuora tenant a `--env NAME` means, and where its callout goes.

A profile holds a tenant id, a REST base URL and the callout URL of the deployment's webhook.
The built-in profiles are the project's three tenants; a TOML file (`ZUORA_PROFILES_FILE`)
adds profiles or overrides their values, one table per profile:

    [production]
    callout_url = "https://zuora-sync.example.com"
    base_url = "https://rest.eu.zuora.com"    # only when the tenant lives elsewhere

Precedence, highest first: `--callout-url`, then the settings (`CALLOUT_URL`,
`ZUORA_BASE_URL` when set explicitly), then the profiles file, then the built-in profile.
Every resolved value remembers where it came from, so the plan can say so.

The tenant id is never overridden by the settings: `ZUORA_TENANT_ID` names the tenant of a
profile that has none, and contradicting a profile's tenant is refused, because configuring
the wrong tenant is the costly mistake this guards against.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from zuora.client import resolve_base_url

CALLOUT_PATH = "/api/v1/zuora/callouts/sync_subscription"
_PROFILE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
_TENANT_ID = re.compile(r"^\d{1,12}$")
_PROFILE_KEYS = {"tenant_id", "base_url", "callout_url", "description"}

#: Production REST hosts: `--verify` refuses them whatever the profile is called.
PRODUCTION_HOSTS = frozenset(
    {"rest.zuora.com", "rest.na.zuora.com", "rest.eu.zuora.com", "rest.ap.zuora.com"}
)


class ProfileError(ValueError):
    """A profile cannot be resolved; the message is one line saying what to set."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    tenant_id: str | None = None
    base_url: str | None = None
    callout_url: str | None = None
    production: bool = False


#: The tenants of the project's rollout (DESIGN.md, "Zuora tenants").
BUILTIN_PROFILES: dict[str, Profile] = {
    "dev": Profile("dev", "Zuora Central Sandbox 2", "10000719", "https://rest.test.zuora.com"),
    "staging": Profile(
        "staging", "Zuora Central Sandbox", "10000796", "https://rest.test.zuora.com"
    ),
    "production": Profile(
        "production", "Zuora Production", "6165", "https://rest.zuora.com", production=True
    ),
}


@dataclass(frozen=True)
class Target:
    """A resolved profile: what setup-callout will act on, and why."""

    profile: str
    description: str
    base_url: str
    callout_url: str
    expected_tenant: str | None
    production: bool
    known: bool
    sources: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        """A simulated tenant on this machine (the sandbox)."""
        return is_loopback_url(self.base_url)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_production_url(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() in PRODUCTION_HOSTS


def endpoint_url(raw: str) -> str:
    """The webhook's callout endpoint from its base URL or the endpoint URL itself.

    Zuora only calls `https://` URLs; plain `http://` is accepted for a loopback host, where
    the local sandbox calls a local webhook.
    """
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProfileError(f"the callout URL {value!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback_url(value):
        raise ProfileError(
            f"the callout URL {value!r} must start with https:// (Zuora calls https only)"
        )
    if parts.query or parts.fragment:
        raise ProfileError(f"the callout URL {value!r} must not carry a query or fragment")
    path = parts.path.rstrip("/")
    if not path.endswith(CALLOUT_PATH):
        path += CALLOUT_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def load_profiles(path: Path | None) -> dict[str, Profile]:
    """The built-in profiles, with the file's tables merged over them."""
    profiles = dict(BUILTIN_PROFILES)
    if path is None:
        return profiles
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"ZUORA_PROFILES_FILE {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"ZUORA_PROFILES_FILE {path} cannot be read: {exc}") from None
    for name, table in raw.items():
        profiles[name] = _file_profile(path, name, table, profiles.get(name))
    return profiles


def _file_profile(path: Path, name: str, table: Any, base: Profile | None) -> Profile:
    where = f"ZUORA_PROFILES_FILE {path}, profile [{name}]"
    if not _PROFILE_NAME.match(name):
        raise ProfileError(f"{where}: a profile name is a letter then letters, digits, - or _")
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: must be a table of tenant_id, base_url, callout_url")
    unknown = sorted(set(table) - _PROFILE_KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(f"{where}: {key} must be a non-empty string")
        values[key] = value.strip()
    tenant = values.get("tenant_id")
    if tenant is not None and not _TENANT_ID.match(tenant):
        raise ProfileError(f"{where}: tenant_id must be the tenant's number, e.g. 10000719")
    if base is not None and base.tenant_id and tenant and tenant != base.tenant_id:
        raise ProfileError(
            f"{where}: tenant_id {tenant} contradicts the built-in {name} tenant "
            f"{base.tenant_id}; name the new tenant's profile differently"
        )
    if "base_url" in values:
        values["base_url"] = _base_url(values["base_url"], where)
    if "callout_url" in values:
        try:
            endpoint_url(values["callout_url"])
        except ProfileError as exc:
            raise ProfileError(f"{where}: {exc}") from None
    return Profile(
        name=name,
        description=values.get("description") or (base.description if base else name),
        tenant_id=tenant or (base.tenant_id if base else None),
        base_url=values.get("base_url") or (base.base_url if base else None),
        callout_url=values.get("callout_url") or (base.callout_url if base else None),
        production=base.production if base else False,
    )


def _base_url(raw: str, where: str) -> str:
    value = resolve_base_url(raw)
    if not re.match(r"^https?://[^\s/]+", value):
        raise ProfileError(f"{where}: base_url must be an http(s) URL or a Zuora environment")
    return value


def resolve(
    settings: Any, env: str, callout_url: str | None = None, *, base_url: str | None = None
) -> Target:
    """Resolve `--env NAME` against the profiles and the settings (see the module doc).

    `base_url` is where a caller's own client already points; it wins over everything.
    """
    if not _PROFILE_NAME.match(env):
        raise ProfileError(f"--env {env!r} is not a profile name")
    profiles = load_profiles(settings.ZUORA_PROFILES_FILE)
    profile = profiles.get(env)
    known = profile is not None
    if profile is None:
        profile = Profile(env, f"tenant profile {env} (from the settings alone)")
    sources: dict[str, str] = {}
    warnings: list[str] = []

    if base_url is not None:
        sources["base_url"] = "the caller's client"
    elif "ZUORA_BASE_URL" in settings.model_fields_set or profile.base_url is None:
        base_url = resolve_base_url(settings.ZUORA_BASE_URL)
        sources["base_url"] = "ZUORA_BASE_URL"
        if profile.base_url and base_url != profile.base_url:
            warnings.append(
                f"ZUORA_BASE_URL {base_url} overrides profile {env}'s {profile.base_url}"
            )
    else:
        base_url = profile.base_url
        sources["base_url"] = f"profile {env}"

    if callout_url:
        raw_callout, sources["callout_url"] = callout_url, "--callout-url"
    elif settings.CALLOUT_URL:
        raw_callout, sources["callout_url"] = settings.CALLOUT_URL, "CALLOUT_URL"
    elif profile.callout_url:
        raw_callout, sources["callout_url"] = profile.callout_url, f"profile {env}"
    else:
        raise ProfileError(
            f"no callout URL for profile {env}: pass --callout-url, set CALLOUT_URL, or add "
            f"callout_url to [{env}] in ZUORA_PROFILES_FILE"
        )
    endpoint = endpoint_url(raw_callout)

    expected = profile.tenant_id
    configured = settings.ZUORA_TENANT_ID
    if expected is not None:
        sources["tenant_id"] = f"profile {env}"
        if configured is not None and configured != expected:
            raise ProfileError(
                f"ZUORA_TENANT_ID {configured} contradicts profile {env}, which is tenant "
                f"{expected}"
            )
    elif configured is not None:
        expected, sources["tenant_id"] = configured, "ZUORA_TENANT_ID"
    elif is_loopback_url(base_url):
        warnings.append(
            f"profile {env} names no tenant and ZUORA_TENANT_ID is unset: the tenant check "
            "is skipped for this local sandbox"
        )
    else:
        raise ProfileError(
            f"profile {env} names no tenant: set ZUORA_TENANT_ID to the id of the tenant "
            f"at {base_url} (the tenant check is only skipped for a local sandbox)"
        )
    production = profile.production or is_production_url(base_url)
    return Target(
        profile=env,
        description=profile.description,
        base_url=base_url,
        callout_url=endpoint,
        expected_tenant=expected,
        production=production,
        known=known,
        sources=sources,
        warnings=tuple(warnings),
    )
