"""`make prefect-up` / `prefect-down` bookkeeping that needs no Prefect server.

The whole path (server, pool, deploy, worker, runs) is tested in tests/flows/test_deployments.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zuora_sync.prefect_local import LocalPrefect, PrefectLocalError, main


def test_a_taken_port_is_one_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        setup = LocalPrefect(state=tmp_path, port=busy.getsockname()[1])
        with pytest.raises(PrefectLocalError, match="is taken by another process"):
            setup.start_server(timeout=5)
    assert setup.running("server") is None and not list(tmp_path.iterdir())


def test_down_stops_the_processes_up_recorded_and_forgets_stale_pid_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = LocalPrefect(state=tmp_path)
    # A PID file left by a process that is gone (a reboot, a kill -9) is not a running server.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "server.pid").write_text(f"{gone.pid}\n")
    assert setup.running("server") is None
    assert not (tmp_path / "server.pid").exists()
    # Nor is a PID that now belongs to another program: `down` must never signal it.
    sleeper = "import time; time.sleep(600)"
    other = subprocess.Popen([sys.executable, "-c", sleeper])
    try:
        (tmp_path / "server.pid").write_text(f"{other.pid}\n")
        assert setup.running("server") is None
        assert main(["down", "--state", str(tmp_path)]) == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    capsys.readouterr()

    # A long-running process in the worker's place: `down` ends it through its process group.
    setup._spawn("worker", [sys.executable, "-c", sleeper, "prefect-worker-stand-in"])
    worker = setup._children["worker"]
    try:
        assert setup.running("worker") == worker.pid and (tmp_path / "worker.log").exists()
        # Another LocalPrefect knows the process by its command line only, once it has exec'd.
        cmdline = Path(f"/proc/{worker.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"prefect" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert main(["down", "--state", str(tmp_path)]) == 0
        assert "worker: stopped" in capsys.readouterr().out
        worker.wait(timeout=10)  # stopped by `down`, through another LocalPrefect
    finally:
        worker.kill()
        worker.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(worker.pid, 0)
    assert main(["down", "--state", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["worker: not running", "server: not running"]


def test_an_existing_server_is_used_as_it_is(tmp_path: Path) -> None:
    setup = LocalPrefect(state=tmp_path, api_url="https://prefect.example.com/api")
    env = setup.env()
    assert env["PREFECT_API_URL"] == "https://prefect.example.com/api"
    # The user's own Prefect profile (where `prefect cloud login` keeps its key) stays in use.
    assert env.get("PREFECT_HOME") == os.environ.get("PREFECT_HOME")
    assert env["ZUORA_SYNC_HOME"] == str(Path(__file__).resolve().parent.parent)
