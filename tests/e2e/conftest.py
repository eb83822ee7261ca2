"""A running ``frontdesk demo`` (web app, worker and the three simulators, each on its own
free loopback port, over real HTTP) for cross-process and browser tests."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# WeChat's in-app browser on an iPhone, as the H5 pages see it.
WECHAT_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50(0x18003237) "
    "NetType/WIFI Language/zh_CN"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class DemoStack:
    web: str
    his: str
    wechat: str
    sms: str
    var: Path
    output: Path

    def settings(self) -> Any:
        """The front server's settings in this demo (the real adapters' configuration)."""
        from frontdesk.core.settings import Settings
        from frontdesk.demo import DemoPorts, demo_settings

        ports = DemoPorts(
            **{k: int(getattr(self, k).rsplit(":", 1)[1]) for k in ("web", "his", "wechat", "sms")}
        )
        return demo_settings(
            Settings(_env_file=None), host="127.0.0.1", ports=ports, keys_dir=self.var / "keys"
        )

    def patients(self, count: int = 3) -> list[dict[str, str]]:
        """Real patients of the demo HIS (read from its own database file)."""
        with sqlite3.connect(self.var / "his-sim.db") as conn:
            rows = conn.execute(
                "SELECT c.card_no, p.name, p.id_number, p.phone FROM his_card c "
                "JOIN his_patient p ON p.id = c.patient_id WHERE p.phone != '' "
                "ORDER BY c.card_no LIMIT ?",
                (count,),
            ).fetchall()
        return [{"card_no": r[0], "name": r[1], "last4": r[2][-4:], "phone": r[3]} for r in rows]

    def last_code(self, phone: str) -> str:
        messages = httpx.get(f"{self.sms}/sim/inbox", params={"phone": phone}, timeout=5).json()
        assert messages, f"no SMS reached {phone}"
        text: str = messages[-1]["text"]
        return text.split("验证码为", 1)[1][:6]


@pytest.fixture(scope="session")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    workdir = tmp_path_factory.mktemp("demo")
    ports = {name: free_port() for name in ("web", "his", "wechat", "sms")}
    output = workdir / "demo.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT / "src"),
        "FRONTDESK_WECHATPAY_SIM_TIME_SCALE": "0.01",
    }
    with output.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frontdesk",
                "demo",
                "--port",
                str(ports["web"]),
                "--his-port",
                str(ports["his"]),
                "--wechat-port",
                str(ports["wechat"]),
                "--sms-port",
                str(ports["sms"]),
            ],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack = DemoStack(
        **{k: f"http://127.0.0.1:{v}" for k, v in ports.items()}, var=workdir / "var", output=output
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                ok = (
                    httpx.get(f"{stack.web}/readyz", timeout=2).status_code == 200
                    and httpx.get(f"{stack.his}/operator", timeout=2).status_code == 200
                    and httpx.get(f"{stack.wechat}/phone", timeout=2).status_code == 200
                )
                if ok:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the demo did not start:\n" + output.read_text()[-4000:])
            time.sleep(0.3)
        yield stack
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


_last_totp_step: dict[str, int] = {}


def fresh_totp_code(secret: str) -> str:
    """A TOTP code of a time step no test has used yet in this session.

    The demo's admin is shared by every browser test, and the console refuses a step that
    was already used (replay protection), so two sign-ins within one 30 s step would fail."""
    totp = pyotp.TOTP(secret)
    while True:
        step = int(time.time()) // totp.interval
        if step > _last_totp_step.get(secret, -1):
            _last_totp_step[secret] = step
            return totp.at(step * totp.interval)
        time.sleep(0.5)
