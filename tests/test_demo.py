"""The README's demo command serves the app and /readyz says ok (a real process and port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_demo_starts_and_is_ready(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "frontdesk", "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
        assert ready is not None, "the demo did not start"
        assert ready.status_code == 200
        assert ready.json()["status"] == "ok"
        home = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert home.status_code == 200
        assert "南京市第二医院" in home.text
        assert "/phone" in home.text and "/console/" in home.text
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in output
    assert proc.returncode == 0, output
    assert (tmp_path / "var" / "frontdesk.db").exists()


@pytest.mark.slow
def test_serve_answers_health_on_the_given_port(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": str(tmp_path),
        "FRONTDESK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
    }
    subprocess.run(
        [sys.executable, "-m", "frontdesk", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "frontdesk", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.3)
        assert ready.json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok"}}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    # Uvicorn shuts down gracefully, then re-raises the signal so supervisors see it.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in output
