"""The console in a real browser: Debian's Chromium driven by Playwright against a real
uvicorn server on loopback, on a temporary SQLite database migrated like production.

Accounts are made with the real ``frontdesk staff create`` command; codes come from pyotp,
as an authenticator app would make them.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import uvicorn
from typer.testing import CliRunner

from frontdesk.cli import app as cli_app
from frontdesk.core import migrate
from frontdesk.core.clock import get_clock, set_clock
from frontdesk.core.database import create_engine
from frontdesk.core.settings import Settings
from frontdesk.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser test password"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]


@dataclass(frozen=True)
class LiveConsole:
    base_url: str
    secrets: dict[str, str]  # username -> TOTP secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _create_with_cli(env: dict[str, str], username: str, role: str) -> str:
    result = CliRunner().invoke(
        cli_app,
        ["staff", "create", "--username", username, "--role", role],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        env=env,
    )
    assert result.exit_code == 0, result.output
    uri = next(line for line in result.output.splitlines() if line.startswith("otpauth://"))
    assert f"Frontdesk:{username}" in uri
    return parse_qs(urlsplit(uri).query)["secret"][0]


@pytest.fixture(scope="module")
def live_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('browser') / 'console.db'}"

    async def migrated() -> None:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    # A thread of our own: no event loop may be running where asyncio.run is called.
    setup = threading.Thread(target=lambda: asyncio.run(migrated()))
    setup.start()
    setup.join()
    env = {"FRONTDESK_DATABASE_URL": url, "FRONTDESK_ENV": "test", "FRONTDESK_SECRET_KEY": "b" * 40}
    secrets = {
        name: _create_with_cli(env, name, role)
        for name, role in (("ada", "admin"), ("carl", "cashier"), ("otto", "auditor"))
    }

    previous_clock = get_clock()
    settings = Settings(env="test", database_url=url, secret_key="b" * 40, _env_file=None)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
        time.sleep(0.05)
    try:
        yield LiveConsole(base_url=f"http://127.0.0.1:{port}", secrets=secrets)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        set_clock(previous_clock)


def _sign_in(page: object, live: LiveConsole, username: str) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto(f"{live.base_url}/console/")
    expect(page).to_have_url(f"{live.base_url}/console/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=code]", pyotp.TOTP(live.secrets[username]).now())
    page.click("button.primary")
    expect(page).to_have_url(f"{live.base_url}/console/")


def test_staff_sign_in_with_totp_and_see_only_their_pages(live_console: LiveConsole) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = live_console.base_url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            # --- the admin: every admin page, creating a colleague shows a QR code
            admin = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
            page = admin.new_page()
            problems: list[str] = []
            # CSP violations show as console errors; failed loads as responses >= 400
            # (the browser's own favicon request aside: the console has none).
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text) if m.type == "error" and "404" not in m.text else None
                ),
            )
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )
            _sign_in(page, live_console, "ada")
            expect(page.get_by_test_id("who")).to_contain_text("系统管理员")
            nav = page.locator("nav.sidenav a")
            expect(nav).to_have_text(
                [
                    "工作台",
                    "就诊卡绑定",
                    "留言管理",
                    "新闻与通知",
                    "医院信息",
                    "关键词回复",
                    "公众号菜单",
                    "模板消息投递",
                    "号源与预约",
                    "收费窗口",
                    "缴费记录",
                    "对账",
                    "审计日志",
                    "接口状态",
                    "员工账号",
                ]
            )
            # The stylesheet applied (CSP allows our file): the nav is laid out as a column.
            assert page.eval_on_selector("nav.sidenav", "e => getComputedStyle(e).width") == "180px"

            page.click("text=审计日志")
            expect(page).to_have_url(f"{base}/console/audit")
            expect(page.locator("table.grid tbody")).to_contain_text("staff.signin")
            page.fill("input[name=action]", "staff.*")
            page.click("form.filters button")
            expect(page).to_have_url(re.compile(r"/console/audit\?.*action=staff\.\*"))

            page.click("text=接口状态")
            expect(page.locator('[data-panel="his"]')).to_contain_text("最近一次成功轮询")

            page.click("text=员工账号")
            page.fill("form.stack input[name=username]", "nina")
            page.fill("form.stack input[name=display_name]", "李护士")
            page.select_option("form.stack select[name=role]", "customer_service")
            page.fill("form.stack input[name=password]", "another long password")
            page.click("form.stack button.primary")
            expect(page.locator(".qr-box svg")).to_be_visible()
            expect(page.get_by_test_id("totp-secret")).to_have_text(re.compile(r"^[A-Z2-7]{32}$"))
            assert problems == []

            # --- the cashier: the dashboard and the window pages; other pages answer 403
            cashier = browser.new_context(locale="zh-CN")
            cpage = cashier.new_page()
            _sign_in(cpage, live_console, "carl")
            expect(cpage.locator("nav.sidenav a")).to_have_text(["工作台", "收费窗口", "缴费记录"])
            expect(cpage.locator('[data-tile="payments_today"] .tile-value')).to_have_text(
                "0 · ¥0.00"
            )
            for path in ("/console/audit", "/console/staff", "/console/health"):
                response = cpage.goto(f"{base}{path}")
                assert response is not None
                assert response.status == 403, path
                expect(cpage.locator("h1")).to_contain_text("403")

            # --- the auditor reads the log and may not reach the admin pages
            auditor = browser.new_context(locale="zh-CN")
            apage = auditor.new_page()
            _sign_in(apage, live_console, "otto")
            expect(apage.locator("nav.sidenav a")).to_have_text(["工作台", "审计日志"])
            apage.goto(f"{base}/console/audit?action=console.access")
            expect(apage.locator("table.grid tbody tr")).to_have_count(3)
            response = apage.goto(f"{base}/console/staff")
            assert response is not None
            assert response.status == 403

            # --- signing out ends the session; the old page now sends you to sign in
            page.goto(f"{base}/console/")
            page.click("text=退出所有设备")
            expect(page).to_have_url(f"{base}/console/login")
            page.goto(f"{base}/console/audit")
            expect(page).to_have_url(f"{base}/console/login")
        finally:
            browser.close()
