"""Start a sandbox on a free loopback port, for tests, benchmarks and the demo.

`running_sandbox(config)` yields a `RunningSandbox` (its base URL, credentials and an admin
client) and stops the server when the block ends. `mode="thread"` serves it from a
background thread of this process (starts in well under a second: tests);
`mode="process"` runs `zuora-sync sandbox` as a child process (its own core and GIL:
benchmarks, the demo).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import uvicorn

from zuora.sandbox.admin import SandboxAdmin
from zuora.sandbox.config import SandboxConfig

_URL_LINE = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


@dataclass
class RunningSandbox:
    """A started sandbox: where it is and how to log in."""

    base_url: str
    client_id: str
    client_secret: str
    config: SandboxConfig
    admin: SandboxAdmin = field(repr=False)

    def env(self) -> dict[str, str]:
        """The environment that points the project at this sandbox."""
        return {
            "ZUORA_BASE_URL": self.base_url,
            "ZUORA_CLIENT_ID": self.client_id,
            "ZUORA_CLIENT_SECRET": self.client_secret,
            "ZUORA_TRACKED_FIELDS": ",".join(self.config.custom_fields),
        }


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@contextmanager
def running_sandbox(
    config: SandboxConfig | None = None,
    mode: Literal["thread", "process"] = "thread",
    startup_timeout: float = 600.0,
) -> Iterator[RunningSandbox]:
    """Run a sandbox for the duration of the block; see the module docstring."""
    config = config or SandboxConfig()
    if mode == "thread":
        with _in_thread(config, startup_timeout) as url:
            yield _handle(url, config)
    else:
        with _in_process(config, startup_timeout) as url:
            yield _handle(url, config)


def _handle(url: str, config: SandboxConfig) -> RunningSandbox:
    return RunningSandbox(url, config.client_id, config.client_secret, config, SandboxAdmin(url))


@contextmanager
def _in_thread(config: SandboxConfig, startup_timeout: float) -> Iterator[str]:
    from zuora.sandbox.app import create_app

    app = create_app(config)
    sock = _bind()
    port = sock.getsockname()[1]
    server = _ThreadServer(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
    )
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, name=f"zuora-sandbox-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"the sandbox did not start: {errors[:1]}")
        if time.monotonic() > deadline:
            raise TimeoutError("the sandbox did not start in time")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def cli_args(config: SandboxConfig) -> list[str]:
    """`zuora-sync sandbox` options that reproduce a config."""
    f = config.faults
    args = [
        "--port",
        "0",
        "--subscriptions",
        str(config.subscriptions),
        "--seed",
        str(config.seed),
        "--tenant-id",
        config.tenant_id,
        "--concurrency-limit",
        str(config.concurrency_limit),
        "--rate-limit",
        str(config.rate_limit_per_window),
        "--rate-window",
        str(config.rate_limit_window_s),
        "--latency-ms",
        str(f.latency_ms),
        "--latency-jitter-ms",
        str(f.latency_jitter_ms),
        "--spike-rate",
        str(f.spike_rate),
        "--spike-ms",
        str(f.spike_ms),
        "--error-rate",
        str(f.error_rate),
        "--timeout-rate",
        str(f.timeout_rate),
        "--timeout-hold",
        str(f.timeout_hold_s),
        "--drop-callouts",
        str(f.callout_drop_rate),
        "--callout-retry-interval",
        str(config.callout_retry_interval_s),
        "--callout-attempts",
        str(config.callout_max_attempts),
        "--max-output-rows",
        str(config.dataquery_max_output_rows),
        "--token-ttl",
        str(config.token_ttl_s),
        "--utc-offset",
        config.tenant_utc_offset,
        "--custom-fields",
        ",".join(config.custom_fields),
    ]
    if config.cache_dir is not None:
        args += ["--cache-dir", str(config.cache_dir)]
    if config.gzip_responses:
        args.append("--gzip")
    if not config.old_id_returns_latest:
        args += ["--old-id", "version"]
    if config.amend_events != "insert_and_update":
        args += ["--amend-events", config.amend_events]
    return args


@contextmanager
def _in_process(config: SandboxConfig, startup_timeout: float) -> Iterator[str]:
    env = dict(os.environ)
    env["ZUORA_CLIENT_ID"] = config.client_id
    env["ZUORA_CLIENT_SECRET"] = config.client_secret
    command = [sys.executable, "-m", "zuora_sync", "sandbox", *cli_args(config)]
    proc = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    url = None
    drain: threading.Thread | None = None
    seen: list[str] = []
    deadline = time.monotonic() + startup_timeout
    assert proc.stdout is not None
    try:
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the sandbox process exited: " + "".join(seen[-20:]))
            seen.append(line)
            match = _URL_LINE.search(line)
            if match:
                url = match.group(1)
            if time.monotonic() > deadline:
                raise TimeoutError("the sandbox process did not start in time")
        # Keep draining its output so it never blocks on a full pipe.
        drain = threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True)
        drain.start()
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # Its own session: this ends its Data Query workers too.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if drain is not None:
            drain.join(timeout=5)
        proc.stdout.close()
