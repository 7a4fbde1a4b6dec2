"""`zuora-sync sandbox` as a user runs it: a real process, its output, its exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.fixtures.sandbox import authorized_client
from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.server import running_sandbox


def test_the_command_serves_a_tenant_and_stops_on_ctrl_c() -> None:
    config = SandboxConfig(subscriptions=30, seed=3, tenant_id="6165", concurrency_limit=9)
    with running_sandbox(config, mode="process", startup_timeout=60) as sb:
        assert sb.admin.health()["subscriptions"] == 30
        token = httpx.post(
            f"{sb.base_url}/oauth/token",
            data={
                "client_id": sb.client_id,
                "client_secret": sb.client_secret,
                "grant_type": "client_credentials",
            },
        ).json()
        assert "tenant.6165" in token["scope"]
        with authorized_client(sb) as http:
            response = http.get("/v1/subscriptions/A-S00000030")
            assert response.status_code == 200
            assert response.headers["concurrency-limit-limit"] == "9"
        assert sb.env()["ZUORA_BASE_URL"] == sb.base_url


def test_the_command_prints_how_to_point_the_project_at_it() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "zuora_sync", "sandbox", "--port", "0", "--subscriptions", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ZUORA_CLIENT_SECRET": "a-real-secret"},
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(6)]
    proc.terminate()
    proc.wait(timeout=15)
    proc.stdout.close()
    text = "".join(lines)
    assert "listening on http://127.0.0.1:" in text
    assert "export ZUORA_BASE_URL=http://127.0.0.1:" in text
    assert "export ZUORA_CLIENT_ID=sandbox-client" in text
    assert "a-real-secret" not in text  # a secret of the user's own is never printed


def test_bad_options_exit_2_with_one_line() -> None:
    for args in (["--error-rate", "3"], ["--custom-fields", "NotCustom"]):
        result = subprocess.run(
            [sys.executable, "-m", "zuora_sync", "sandbox", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("zuora-sync: ")


def test_config_from_settings_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from zuora_sync.settings import get_settings

    monkeypatch.setenv("ZUORA_CLIENT_ID", "another-client")
    monkeypatch.setenv("ZUORA_CLIENT_SECRET", "another-secret")
    monkeypatch.setenv("ZUORA_TRACKED_FIELDS", "Region__c,Tier__c")
    get_settings.cache_clear()
    config = SandboxConfig.from_settings(subscriptions=3)
    assert (config.client_id, config.client_secret) == ("another-client", "another-secret")
    assert config.custom_fields == ("Region__c", "Tier__c")
    with running_sandbox(config) as sb, authorized_client(sb) as http:
        body = http.get("/v1/subscriptions/A-S00000001").json()
        assert "Region__c" in body and "Tier__c" in body and "SupportTier__c" not in body
