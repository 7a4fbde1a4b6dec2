"""Typed Zuora errors, so callers decide by kind rather than by parsing messages.

    ZuoraError
    ├── ZuoraNotFound          404, or a reason code ending in 40
    ├── ZuoraAuthError         401/403 after a token refresh, bad credentials
    ├── ZuoraPermanentError    any other refusal no retry can fix (400, 415, 422, ...)
    └── ZuoraTransientError    5xx, timeouts, connection failures, lock contention
        └── ZuoraRateLimited   429: a rate or concurrency limit

Zuora speaks several error dialects depending on the service; `parse_error_body` reads them
all into one (code, message) list. Its 8-digit REST reason codes end in a category: codes
ending 50 (locking contention), 61 (temporary error), 70 (concurrency limit) and 99
(external integration) are the retryable ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RETRYABLE_CODE_SUFFIXES = ("50", "61", "70", "99")
RETRYABLE_CODES = {
    "REQUEST_EXCEEDED_LIMIT",
    "REQUEST_EXCEEDED_RATE",
    "LOCK_COMPETITION",
    "TEMPORARY_ERROR",
}


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


class ZuoraError(Exception):
    """An error answered by (or on the way to) Zuora. Never carries credentials."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reasons: list[Reason] | None = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reasons = reasons or []
        self.request_id = request_id
        self.method = method
        self.path = path

    @property
    def code(self) -> str | None:
        return self.reasons[0].code if self.reasons else None

    def __str__(self) -> str:
        where = f"{self.method} {self.path}: " if self.method and self.path else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        code = f"[{self.code}] " if self.code else ""
        request = f" (Zuora-Request-Id {self.request_id})" if self.request_id else ""
        return f"{where}{status}{code}{self.message}{request}"


class ZuoraNotFound(ZuoraError):
    """The object does not exist (or no longer does)."""


class ZuoraAuthError(ZuoraError):
    """Credentials or permissions are wrong; retrying will not help."""


class ZuoraPermanentError(ZuoraError):
    """Zuora refused the request for a reason no retry can fix."""


class ZuoraTransientError(ZuoraError):
    """Worth retrying later: server errors, timeouts, connection failures, lock contention."""

    retryable = True


class ZuoraRateLimited(ZuoraTransientError):
    """A rate or concurrency limit answered 429; `retry_after` seconds if Zuora said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


def parse_error_body(body: bytes | str | Any) -> list[Reason]:
    """Read the reasons out of any of Zuora's error dialects; [] when there are none."""
    doc: Any = body
    if isinstance(body, bytes | str):
        try:
            doc = json.loads(body or "null")
        except ValueError:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            text = text.strip()
            return [Reason("", text[:500])] if text else []
    if not isinstance(doc, dict):
        return []
    reasons: list[Reason] = []
    # REST: {"success": false, "reasons": [{"code": "58730222", "message": "..."}]}
    for item in doc.get("reasons") or []:
        if isinstance(item, dict):
            reasons.append(Reason(str(item.get("code", "")), str(item.get("message", ""))))
    # CRUD: {"Errors": [{"Code": "INVALID_VALUE", "Message": "..."}]}
    for item in doc.get("Errors") or []:
        if isinstance(item, dict):
            reasons.append(Reason(str(item.get("Code", "")), str(item.get("Message", ""))))
    # ZOQL fault: {"faultcode": "fns:INVALID_FIELD", "faultstring": "..."}
    if "faultcode" in doc or "faultstring" in doc:
        code = str(doc.get("faultcode", "")).split(":")[-1]
        reasons.append(Reason(code, str(doc.get("faultstring", ""))))
    # Events, notifications, limits: {"code": "REQUEST_EXCEEDED_LIMIT", "message": "..."}
    if not reasons and ("code" in doc or "message" in doc):
        reasons.append(Reason(str(doc.get("code", "")), str(doc.get("message", ""))))
    return reasons


def is_retryable_code(code: str) -> bool:
    return code in RETRYABLE_CODES or (
        len(code) == 8 and code.isdigit() and code.endswith(RETRYABLE_CODE_SUFFIXES)
    )


def error_for(
    status: int,
    reasons: list[Reason],
    *,
    request_id: str | None = None,
    method: str | None = None,
    path: str | None = None,
    retry_after: float | None = None,
) -> ZuoraError:
    """The typed error for an HTTP status (200 for `success: false`) and its reasons."""
    message = "; ".join(r.message for r in reasons if r.message) or f"HTTP {status}"
    kwargs: dict[str, Any] = {
        "status": status,
        "reasons": reasons,
        "request_id": request_id,
        "method": method,
        "path": path,
    }
    codes = [r.code for r in reasons]
    if status == 429 or any(
        c in ("REQUEST_EXCEEDED_LIMIT", "REQUEST_EXCEEDED_RATE") for c in codes
    ):
        return ZuoraRateLimited(message, retry_after=retry_after, **kwargs)
    if status >= 500 or status in (408,) or any(is_retryable_code(c) for c in codes):
        return ZuoraTransientError(message, **kwargs)
    if status == 404 or any(c.endswith("40") and len(c) == 8 for c in codes):
        return ZuoraNotFound(message, **kwargs)
    if status in (401, 403) or any(len(c) == 8 and c.endswith(("10", "11")) for c in codes):
        return ZuoraAuthError(message, **kwargs)
    return ZuoraPermanentError(message, **kwargs)
