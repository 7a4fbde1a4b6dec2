"""OAuth client credentials and the bearer token every Zuora endpoint requires."""

from __future__ import annotations

import time

import httpx

from tests.fixtures.sandbox import SandboxFactory
from zuora.sandbox.app import WWW_AUTHENTICATE
from zuora.sandbox.server import RunningSandbox


def get_token(sb: RunningSandbox, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{sb.base_url}/oauth/token",
        data={"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials"},
    )


def test_good_credentials_get_an_hour_long_bearer_token_naming_the_tenant(
    sandbox_factory: SandboxFactory,
) -> None:
    sb = sandbox_factory(tenant_id="10000796")
    response = get_token(sb, sb.client_id, sb.client_secret)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert 3590 <= body["expires_in"] <= 3600
    assert len(body["access_token"]) == 32 and body["jti"]
    assert "tenant.10000796" in body["scope"].split()
    # The token opens the API.
    got = httpx.get(
        f"{sb.base_url}/v1/subscriptions/A-S00000001",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert got.status_code == 200


def test_bad_credentials_are_refused_with_zuoras_401(sandbox: RunningSandbox) -> None:
    for client_id, secret in (
        (sandbox.client_id, "wrong"),
        ("someone-else", sandbox.client_secret),
    ):
        response = get_token(sandbox, client_id, secret)
        assert response.status_code == 401
        assert response.json() == {"message": "Authentication error"}
    bad_grant = httpx.post(
        f"{sandbox.base_url}/oauth/token",
        data={
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "grant_type": "password",
        },
    )
    assert bad_grant.status_code == 400


def test_every_api_endpoint_needs_a_valid_bearer_token(sandbox: RunningSandbox) -> None:
    cases = [
        ("GET", "/v1/subscriptions/A-S00000001", {}),
        ("POST", "/v1/action/query", {"Authorization": "Bearer not-a-token"}),
        ("GET", "/query/jobs", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("GET", "/events/event-triggers", {}),
        ("GET", "/notifications/notification-definitions", {}),
    ]
    for method, path, headers in cases:
        response = httpx.request(method, f"{sandbox.base_url}{path}", headers=headers)
        assert response.status_code == 401, path
        assert response.json() == {"message": "Authentication error"}
        assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
        assert len(response.headers["zuora-request-id"]) == 36


def test_an_expired_token_is_refused(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(token_ttl_s=3)
    token = get_token(sb, sb.client_id, sb.client_secret).json()["access_token"]
    # Counted from the answer, which comes after the sandbox started the token's clock.
    issued = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        httpx.get(f"{sb.base_url}/v1/subscriptions/A-S00000001", headers=headers).status_code == 200
    )
    time.sleep(max(0.0, 3.2 - (time.monotonic() - issued)))
    assert (
        httpx.get(f"{sb.base_url}/v1/subscriptions/A-S00000001", headers=headers).status_code == 401
    )


def test_the_admin_can_expire_every_token_at_once(sandbox: RunningSandbox) -> None:
    token = get_token(sandbox, sandbox.client_id, sandbox.client_secret).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert sandbox.admin.expire_tokens() >= 1
    response = httpx.get(f"{sandbox.base_url}/v1/subscriptions/A-S00000001", headers=headers)
    assert response.status_code == 401
