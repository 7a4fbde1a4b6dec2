"""Run zuora-sync's deployments on Prefect: a server, the work pool, `prefect.yaml`, a worker.

`make prefect-up` / `make prefect-down` call this module. With no `PREFECT_API_URL` in the
environment it starts a Prefect server of its own (in the background, its database and logs
under the state directory, default `.prefect-local/` in the checkout) and waits until it is
healthy. With `PREFECT_API_URL` (and `PREFECT_API_KEY` for Prefect Cloud) it uses that server
instead and starts none. Either way it then creates the `zuora-sync` process work pool if it
is missing, deploys everything in `prefect.yaml` and starts a worker in the background, and
`down` stops what `up` started, by the PID files it wrote.

The worker, and each flow run it starts, inherits this process's environment: that is where
the settings (DATABASE_URL, ZUORA_*, CALLOUT_*) come from, never from Prefect parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

POOL = "zuora-sync"
PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_STATE = PROJECT / ".prefect-local"
PROCESSES = ("worker", "server")  # stopped in this order
LEASES_ON_DISK = "prefect.server.concurrency.lease_storage.filesystem"


class PrefectLocalError(Exception):
    """Something `up` or `down` could not do; the message is one line for the operator."""


@dataclass
class LocalPrefect:
    """One project's Prefect set-up: where it keeps its state and which API it talks to."""

    project: Path = PROJECT
    state: Path = DEFAULT_STATE
    host: str = "127.0.0.1"
    port: int = 4200
    #: An existing server or Prefect Cloud; None starts a local server.
    api_url: str | None = None
    #: Whether the local server creates scheduled runs (tests turn it off to run ad hoc only).
    scheduler: bool = True
    #: Added to the environment of everything started (e.g. DATABASE_URL for the worker).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Processes started by this object, reaped when stopped (an earlier `up`'s are found by PID).
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def local(self) -> bool:
        return self.api_url is None

    @property
    def url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return self.url.removesuffix("/api") if self.local else self.url

    def env(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        # Where the deployments' pull step changes to: this checkout unless the workers
        # keep theirs elsewhere.
        env.setdefault("ZUORA_SYNC_HOME", str(self.project))
        env.update(
            PREFECT_API_URL=self.url,
            # An offline machine would log a failed telemetry call on every beat otherwise.
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )
        if self.local:
            # The server's SQLite database and the CLI's profile stay inside the state dir,
            # never in the user's ~/.prefect.
            env["PREFECT_HOME"] = str(self.state / "home")
            env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = str(self.scheduler).lower()
            # The deployments' concurrency slots are leases. Kept in memory (Prefect's
            # default), a lease held by a run when the server stops is lost with its slot
            # still taken, and every later drain-callouts run is cancelled; on disk, it
            # expires after the run is gone and the server frees the slot.
            env.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", LEASES_ON_DISK)
        return env

    # --- processes ------------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state / f"{name}.log"

    def running(self, name: str) -> int | None:
        """The PID of a process this set-up started and that still runs, else None."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        ours = name in self._children and self._children[name].pid == pid
        # A child of ours may not have exec'd yet, and so not look like Prefect in /proc.
        if not _alive(pid) or not (ours or _is_prefect(pid)):
            # Gone (a reboot, a kill -9), or its PID now belongs to something else.
            self._pid_file(name).unlink(missing_ok=True)
            return None
        return pid

    def _spawn(self, name: str, argv: Sequence[str]) -> int:
        self.state.mkdir(parents=True, exist_ok=True)
        with self.log_file(name).open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            # A session of its own: `down` stops the process with every flow run it started.
            process = subprocess.Popen(  # noqa: S603 - argv is built here, not from input
                argv,
                cwd=self.project,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._children[name] = process
        self._pid_file(name).write_text(f"{process.pid}\n")
        return process.pid

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """Stop a process `up` started (SIGTERM, then SIGKILL); False if none was running."""
        pid = self.running(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        # Wait for the whole group: a worker's flow runs report their end (and give back
        # their concurrency slot) to the server, which must still be up for that.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=10)
        self._pid_file(name).unlink(missing_ok=True)
        return True

    # --- steps ----------------------------------------------------------------------------

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/health", timeout=2.0, headers=self._auth())
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _auth(self) -> dict[str, str]:
        key = os.environ.get("PREFECT_API_KEY")
        return {"Authorization": f"Bearer {key}"} if key and not self.local else {}

    def start_server(self, timeout: float = 180.0) -> int:
        """Start the local server, or keep the one already started; wait until healthy."""
        pid = self.running("server")
        if pid is None:
            if _port_taken(self.host, self.port):
                raise PrefectLocalError(
                    f"{self.host}:{self.port} is taken by another process: choose another port "
                    "(PREFECT_PORT=...), or set PREFECT_API_URL to use that server"
                )
            pid = self._spawn(
                "server",
                [_prefect(), "server", "start", "--host", self.host, "--port", str(self.port)],
            )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not _alive(pid):
                raise PrefectLocalError(
                    f"the Prefect server exited during start-up; see {self.log_file('server')}"
                )
            if time.monotonic() > deadline:
                raise PrefectLocalError(
                    f"the Prefect server was not healthy after {timeout:.0f} s; "
                    f"see {self.log_file('server')}"
                )
            time.sleep(0.5)
        return pid

    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the Prefect CLI against this set-up's API, from the checkout."""
        done = subprocess.run(  # noqa: S603 - argv is built here, not from input
            [_prefect(), "--no-prompt", *args],
            cwd=self.project,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()
            last = output[-1] if output else f"exit code {done.returncode}"
            raise PrefectLocalError(f"`prefect {' '.join(args)}` failed: {last}")
        return done

    def ensure_pool(self) -> bool:
        """Create the process work pool unless it exists; True if it was created."""
        # One CLI call either way (each costs a Prefect import); an existing pool, and the
        # job template someone may have tuned on it, are left as they are.
        done = self.prefect("work-pool", "create", POOL, "--type", "process", check=False)
        if done.returncode == 0:
            return True
        if "already exists" in done.stdout + done.stderr:
            return False
        output = (done.stdout + done.stderr).strip().splitlines()
        raise PrefectLocalError(
            f"cannot create the work pool {POOL!r}: {output[-1] if output else done.returncode}"
        )

    def deploy(self, names: Sequence[str] = ()) -> str:
        """Deploy prefect.yaml (every deployment, or the named ones); Prefect's output."""
        selection = [arg for name in names for arg in ("--name", name)] or ["--all"]
        return self.prefect("deploy", *selection).stdout

    def start_worker(self) -> int:
        pid = self.running("worker")
        if pid is not None:
            return pid
        return self._spawn("worker", [_prefect(), "worker", "start", "--pool", POOL])

    def up(self, names: Sequence[str] = (), *, echo: Callable[[str], None] | None = None) -> None:
        """Server (when local), pool, deployments, worker: each step kept if already done."""
        echo = echo or _echo
        if self.local:
            echo(f"Prefect server: starting on {self.ui_url} (log {self.log_file('server')})")
            self.start_server()
        elif not self.healthy():
            raise PrefectLocalError(f"the Prefect API at {self.url} does not answer /health")
        echo(f"Prefect API: {self.url} is healthy")
        created = self.ensure_pool()
        echo(f"work pool {POOL!r}: {'created' if created else 'already there'}")
        self.deploy(names)
        echo(f"deployed: {', '.join(names) if names else 'everything in prefect.yaml'}")
        self.start_worker()
        echo(f"worker: polling {POOL!r} (log {self.log_file('worker')})")
        echo(f"Open {self.ui_url} to see the deployments, their schedules and runs.")

    def down(self, *, echo: Callable[[str], None] | None = None) -> None:
        echo = echo or _echo
        for name in PROCESSES:
            stopped = self.stop(name)
            echo(f"{name}: {'stopped' if stopped else 'not running'}")


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        finished = 0  # not our child (started by an earlier `up`): ask the kernel
    else:
        if finished == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_prefect(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): the PID file is all there is to go by
    return b"prefect" in command


def _group_alive(pgid: int) -> bool:
    _alive(pgid)  # reaps the group's leader if it is our child and has exited
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _prefect() -> str:
    # The Prefect of this environment, whatever PATH says.
    return str(Path(sys.executable).parent / "prefect")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zuora_sync.prefect_local",
        description="Start or stop zuora-sync's Prefect server, deployments and worker.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PREFECT_PORT", "4200")))
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    parser.add_argument(
        "--name", action="append", default=[], help="deploy only this deployment (repeatable)"
    )
    args = parser.parse_args(argv)
    setup = LocalPrefect(
        state=args.state, port=args.port, api_url=os.environ.get("PREFECT_API_URL") or None
    )
    try:
        if args.action == "up":
            if setup.local:
                # A fresh machine's scheduled runs must find the warehouse's tables. A shared
                # deployment migrates as a release step instead (docs/operations.md).
                subprocess.run(  # noqa: S603 - argv is built here
                    [str(Path(sys.executable).parent / "zuora-sync"), "db", "upgrade"],
                    env=setup.env(),
                    cwd=setup.project,
                    check=True,
                )
            setup.up(args.name)
        elif args.action == "down":
            setup.down()
        else:
            for name in PROCESSES:
                pid = setup.running(name)
                _echo(f"{name}: {'running, pid ' + str(pid) if pid else 'not running'}")
            _echo(f"API {setup.url}: {'healthy' if setup.healthy() else 'not answering'}")
    except PrefectLocalError as exc:
        sys.stderr.write(f"prefect-local: {exc}\n")
        return 2 if "taken" in str(exc) else 1
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(f"prefect-local: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
