"""A small typed, synchronous client for a sandbox's `/_sandbox/` admin endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson


class SandboxAdminError(RuntimeError):
    """The admin endpoint refused the request."""


class SandboxAdmin:
    """Controls one running sandbox: faults, data changes without callouts, counters."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with httpx.Client(base_url=self.base_url, timeout=self._timeout) as client:
            response = client.request(method, f"/_sandbox{path}", json=body)
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise SandboxAdminError(f"{method} /_sandbox{path}: {response.status_code} {message}")
        return response.json()

    # --- state ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/config")
        return result

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change runtime settings, e.g. `configure(callout_retry_interval_s=0.1)`."""
        result: dict[str, Any] = self._call("PATCH", "/config", changes)
        return result

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge fault settings, e.g. `set_faults(error_rate=0.2, latency_ms=50)`."""
        result: dict[str, Any] = self._call("PUT", "/faults", faults)
        return result

    def clear_faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", "/faults")
        return result

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/counters")
        return result

    def reset_counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/counters/reset")
        return result

    def callouts(self) -> list[dict[str, Any]]:
        """Every notification sent so far with its attempts."""
        result: list[dict[str, Any]] = self._call("GET", "/callouts")["notifications"]
        return result

    def clear_callouts(self) -> None:
        self._call("DELETE", "/callouts")

    def expire_tokens(self) -> int:
        return int(self._call("POST", "/tokens/expire")["expired"])

    # --- data changes that fire no callout -------------------------------------------------

    def edit_custom_fields(
        self,
        number: str,
        fields: dict[str, Any],
        *,
        version: int | None = None,
        touch_updated_date: bool = True,
    ) -> bool:
        """Edit custom fields in place; returns whether anything changed."""
        body: dict[str, Any] = {"customFields": fields, "touchUpdatedDate": touch_updated_date}
        if version is not None:
            body["version"] = version
        return bool(self._call("PUT", f"/subscriptions/{number}/custom-fields", body)["changed"])

    def amend(self, key: str, body: dict[str, Any] | None = None) -> str:
        """Create a new version; returns its id."""
        return str(self._call("POST", f"/subscriptions/{key}/amend", body or {})["subscriptionId"])

    def cancel(self, key: str, body: dict[str, Any] | None = None) -> str:
        return str(self._call("POST", f"/subscriptions/{key}/cancel", body or {})["subscriptionId"])

    def delete(self, key: str) -> None:
        self._call("DELETE", f"/subscriptions/{key}")

    def export(self) -> Iterator[dict[str, Any]]:
        """Every subscription's latest version exactly as GET returns it."""
        with (
            httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(60.0, read=600.0)) as client,
            client.stream("GET", "/_sandbox/export") as response,
        ):
            response.raise_for_status()
            for line in response.iter_lines():
                if line:
                    yield orjson.loads(line)
