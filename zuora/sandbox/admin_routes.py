"""`/_sandbox/...`: the test and benchmark controls of a tenant (no token, no faults).

Changes made here fire no callout: that is how tests simulate a lost callout.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from zuora.sandbox.app import faults_from, json_response, runtime_update, stream_jsonl
from zuora.sandbox.config import Faults
from zuora.sandbox.store import StoreError
from zuora.sandbox.tenant import Tenant


def _problem(status: int, message: str) -> Response:
    return json_response({"success": False, "message": message}, status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}"


def admin_routes(app: FastAPI, tenant: Tenant) -> None:
    """Register the admin endpoints on the app."""
    store = tenant.store

    @app.get("/_sandbox/health")
    async def health() -> Response:
        return json_response(
            {
                "status": "ok",
                "warm": store.warm.is_set(),
                "subscriptions": tenant.config.subscriptions,
                "seed": tenant.config.seed,
                "tenantId": tenant.config.tenant_id,
                "customFields": list(tenant.config.custom_fields),
            }
        )

    @app.get("/_sandbox/config")
    async def get_config() -> Response:
        return json_response(tenant.config.model_dump(mode="json", exclude={"client_secret"}))

    @app.patch("/_sandbox/config")
    async def patch_config(request: Request) -> Response:
        """Change runtime settings: limits, callout retry policy, choices, faults."""
        try:
            patch = await _body(request)
            updated = runtime_update(tenant.config, patch)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _problem(400, str(exc))
        except ValidationError as exc:
            return _problem(400, _validation_message(exc))
        for name in patch:
            setattr(tenant.config, name, getattr(updated, name))
        tenant.zoql.idle_s = tenant.config.zoql_locator_idle_s
        return json_response(tenant.config.model_dump(mode="json", exclude={"client_secret"}))

    @app.get("/_sandbox/faults")
    async def get_faults() -> Response:
        return json_response(tenant.config.faults.model_dump(mode="json"))

    @app.put("/_sandbox/faults")
    async def set_faults(request: Request) -> Response:
        """Merge the given fault settings into the current ones."""
        try:
            tenant.config.faults = faults_from(tenant.config.faults, await _body(request))
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _problem(400, str(exc))
        except ValidationError as exc:
            return _problem(400, _validation_message(exc))
        return json_response(tenant.config.faults.model_dump(mode="json"))

    @app.delete("/_sandbox/faults")
    async def clear_faults() -> Response:
        tenant.config.faults = Faults()
        return json_response(tenant.config.faults.model_dump(mode="json"))

    @app.get("/_sandbox/counters")
    async def counters() -> Response:
        return json_response(tenant.snapshot())

    @app.post("/_sandbox/counters/reset")
    async def reset_counters() -> Response:
        tenant.reset_counters()
        return json_response(tenant.snapshot())

    @app.get("/_sandbox/callouts")
    async def callouts() -> Response:
        """Every notification with its attempts, oldest first."""
        return json_response({"notifications": tenant.events.history()})

    @app.delete("/_sandbox/callouts")
    async def clear_callouts() -> Response:
        tenant.events.notifications.clear()
        return json_response({"notifications": []})

    @app.post("/_sandbox/tokens/expire")
    async def expire_tokens() -> Response:
        return json_response({"expired": tenant.expire_tokens()})

    @app.put("/_sandbox/subscriptions/{number}/custom-fields")
    async def edit_fields(number: str, request: Request) -> Response:
        """Edit custom fields in place without firing a callout.

        Body: `{"customFields": {...}, "version": N (default latest),
        "touchUpdatedDate": true}`.
        """
        try:
            body = await _body(request)
            fields = body.get("customFields")
            if not isinstance(fields, dict):
                raise ValueError("customFields is required: an object")
            latest = store.latest(number)
            if latest is None:
                return _problem(404, f"no subscription {number}")
            version = int(body.get("version") or latest["version"])
            changes = store.edit_custom_fields(
                number,
                version,
                fields,
                touch_updated=bool(body.get("touchUpdatedDate", True)),
            )
        except StoreError as exc:
            return _problem(exc.status, exc.message)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _problem(400, str(exc))
        return json_response({"success": True, "changed": bool(changes.changes)})

    @app.post("/_sandbox/subscriptions/{key}/amend")
    async def amend(key: str, request: Request) -> Response:
        """A new version as `PUT /v1/subscriptions/{key}` makes it, without a callout."""
        try:
            changes = store.amend(key, await _body(request))
        except StoreError as exc:
            return _problem(exc.status, exc.message)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _problem(400, str(exc))
        return json_response({"success": True, "subscriptionId": changes.subscription_id})

    @app.post("/_sandbox/subscriptions/{key}/cancel")
    async def cancel(key: str, request: Request) -> Response:
        try:
            body = await _body(request)
            body.setdefault("cancellationPolicy", "EndOfCurrentTerm")
            changes = store.cancel(key, body)
        except StoreError as exc:
            return _problem(exc.status, exc.message)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _problem(400, str(exc))
        return json_response({"success": True, "subscriptionId": changes.subscription_id})

    @app.delete("/_sandbox/subscriptions/{key}")
    async def delete(key: str) -> Response:
        """Remove a subscription: GET answers 404, queries no longer see it."""
        try:
            row = store.resolve(key, latest_for_old_id=True)
            store.delete(row["name"])
        except StoreError as exc:
            return _problem(exc.status, exc.message)
        return json_response({"success": True, "subscriptionNumber": row["name"]})

    @app.get("/_sandbox/export")
    async def export() -> Response:
        """Every subscription's latest version, as GET returns it, one JSON per line."""
        return stream_jsonl(store.export())
