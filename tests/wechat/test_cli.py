"""``frontdesk wechat push-menu`` against a simulator served over loopback HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from frontdesk.cli import app as cli
from frontdesk.sims.wechat_sim.app import create_sim_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_push_menu_command(tmp_path: Path) -> None:
    sim_app = create_sim_app()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(sim_app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        env = {
            "FRONTDESK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
            "FRONTDESK_WECHAT_API_BASE": f"http://127.0.0.1:{port}",
        }
        runner = CliRunner()
        assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
        result = runner.invoke(cli, ["wechat", "push-menu"], env=env)
        assert result.exit_code == 0, result.output
        assert "menu pushed: 3 top-level buttons" in result.output
        assert sim_app.state.platform.menu["button"][0]["name"] == "预约挂号"
        bad = runner.invoke(
            cli,
            ["wechat", "push-menu"],
            env={**env, "FRONTDESK_WECHAT_MENU": '{"button": [{"type": "view", "name": "x"}]}'},
        )
        assert bad.exit_code == 1
        assert "errcode 40016" in bad.output
    finally:
        server.should_exit = True
        thread.join(timeout=10)
