"""The demo HIS as a real process on a real port: the CLI, the adapter and the kit."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from frontdesk.his.bridge import HttpHisGateway

SECRET = "e2e-" + os.urandom(12).hex()
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": SRC,
        "FRONTDESK_HIS_KEY_ID": "e2e",
        "FRONTDESK_HIS_SECRET": SECRET,
        "FRONTDESK_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def served_his(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frontdesk",
            "his-sim",
            "--port",
            str(port),
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'his.db'}",
        ],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the demo HIS did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
def test_adapter_and_conformance_kit_over_real_http(served_his: str) -> None:
    async def through_adapter() -> int:
        gateway = HttpHisGateway(
            base_url=served_his, key_id="e2e", secret=SECRET, timeout_seconds=5
        )
        try:
            return len(await gateway.departments())
        finally:
            await gateway.aclose()

    assert asyncio.run(through_adapter()) == 20

    def kit(secret: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "frontdesk",
                "his-conformance",
                served_his,
                "--key-id",
                "e2e",
                "--secret",
                secret,
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    good = kit(SECRET)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "14 passed, 0 failed" in good.stdout
    assert "refusals only (no --suspend-schedule-id given)" in good.stdout
    bad = kit("not-the-secret")
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout
