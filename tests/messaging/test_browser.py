"""The message board and articles in a real browser (Debian's Chromium, Playwright), with
the front app and the WeChat simulator both running under uvicorn on loopback.

A patient on a phone-sized screen signs in through the simulator's OAuth, leaves a message
whose text is a script; customer service answers in the console; the outbox worker sends
the reply to the simulator as a template message and the patient sees it in the thread.
No script written by a patient or typed into an article ever runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
import uvicorn

from frontdesk.container import build_container
from frontdesk.core import migrate
from frontdesk.core.clock import get_clock, set_clock
from frontdesk.core.database import create_engine
from frontdesk.core.settings import Settings
from frontdesk.core.worker import Worker, load_job_modules
from frontdesk.sims.wechat_sim.app import create_sim_app
from frontdesk.sims.wechat_sim.platform import SimConfig, SimPlatform
from frontdesk.web.app import create_app
from tests.console.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    _create_with_cli,
    _free_port,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]

SCRIPT = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
PHONE: Any = {"width": 390, "height": 844}


@dataclass(frozen=True)
class Live:
    front: str
    sim_url: str
    sim: SimPlatform
    settings: Settings
    staff_secret: str


def _serve(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
        time.sleep(0.05)
    return server, thread


def _in_own_loop(coro: Any) -> Any:
    """Run a coroutine in a thread with its own event loop (pytest's may be running)."""
    result: list[Any] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(coro)))
    runner.start()
    runner.join()
    return result[0] if result else None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('msgbrowser') / 'front.db'}"

    async def migrated() -> None:
        engine = create_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    _in_own_loop(migrated())
    env = {"FRONTDESK_DATABASE_URL": url, "FRONTDESK_ENV": "test", "FRONTDESK_SECRET_KEY": "m" * 40}
    staff_secret = _create_with_cli(env, "kefu", "customer_service")
    front_port, sim_port = _free_port(), _free_port()
    front, sim_url = f"http://127.0.0.1:{front_port}", f"http://127.0.0.1:{sim_port}"
    settings = Settings(
        env="test",
        database_url=url,
        secret_key="m" * 40,
        public_base_url=front,
        wechat_api_base=sim_url,
        wechat_oauth_authorize_url=f"{sim_url}/connect/oauth2/authorize",
        _env_file=None,
    )
    sim_app = create_sim_app(
        SimConfig(
            appid=settings.wechat_appid,
            appsecret=settings.wechat_appsecret.get_secret_value(),
            token=settings.wechat_token.get_secret_value(),
            encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
            callback_url=f"{front}/wechat/callback",
            front_base_url=front,
            callback_mode=settings.wechat_callback_mode,
        )
    )
    previous_clock = get_clock()
    servers = [_serve(sim_app, sim_port), _serve(create_app(settings), front_port)]
    try:
        yield Live(front, sim_url, sim_app.state.platform, settings, staff_secret)
    finally:
        for server, thread in reversed(servers):
            server.should_exit = True
            thread.join(timeout=20)
        set_clock(previous_clock)


def _drain(settings: Settings) -> int:
    """One worker pass, as ``frontdesk worker`` would run it (its own container)."""

    load_job_modules()

    async def run() -> int:
        container = build_container(settings)
        try:
            return await Worker(container).drain()
        finally:
            await container.aclose()

    done: int = _in_own_loop(run())
    return done


def _watch(page: Any, problems: list[str]) -> None:
    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)


def test_patient_message_staff_reply_template_and_no_script_runs(live: Live) -> None:
    from playwright.sync_api import expect, sync_playwright

    user = live.sim.add_user("王小明")
    _in_own_loop(live.sim.user_follows(user.openid))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            problems: list[str] = []
            # --- the patient's phone: the simulator knows who holds it by its cookie
            phone_ctx = browser.new_context(locale="zh-CN", viewport=PHONE, is_mobile=True)
            phone_ctx.add_cookies(
                [{"name": "wxsim_openid", "value": user.openid, "url": live.sim_url}]
            )
            phone = phone_ctx.new_page()
            _watch(phone, problems)
            phone.goto(f"{live.front}/h5/")  # through the simulator's OAuth and back
            phone.click("text=留言咨询")
            expect(phone).to_have_url(f"{live.front}/h5/messages")
            phone.fill("textarea[name=body]", f"今天下午能挂号吗？{SCRIPT}")
            phone.click("button.primary")
            expect(phone.locator("[data-testid=posts] .post-body")).to_have_text(
                f"今天下午能挂号吗？{SCRIPT}"
            )
            thread_url = phone.url
            assert phone.locator(".post-body script, .post-body img").count() == 0
            assert phone.title() != "pwned"

            # --- customer service answers in the console
            desk = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
            staff = desk.new_page()
            _watch(staff, problems)
            staff.goto(f"{live.front}/console/")
            staff.fill("input[name=username]", "kefu")
            staff.fill("input[name=password]", PASSWORD)
            staff.fill("input[name=code]", pyotp.TOTP(live.staff_secret).now())
            staff.click("button.primary")
            expect(staff).to_have_url(f"{live.front}/console/")
            staff.click("nav.sidenav >> text=留言管理")
            staff.click("[data-testid=inbox] a")
            expect(staff.locator("[data-testid=posts] .post-body")).to_have_text(
                f"今天下午能挂号吗？{SCRIPT}"
            )
            assert staff.title() != "pwned"
            staff.fill("textarea[name=body]", "下午 14:00 起有普通号。")
            staff.click("text=发送回复")
            expect(staff.locator("[data-testid=posts] li")).to_have_count(2)

            # --- the worker sends the reply as a template message to WeChat (the simulator)
            assert _drain(live.settings) >= 1
            [card] = [t for t in live.sim.sent_templates if t["touser"] == user.openid]
            assert card["template_id"] == "TPL_MESSAGE_REPLY"
            assert card["url"] == thread_url
            assert card["data"]["thing2"] == "下午 14:00 起有普通号。"

            # --- and the patient sees it in the thread, then rates it
            phone.goto(thread_url)
            expect(phone.locator("[data-author=staff] .post-body")).to_have_text(
                "下午 14:00 起有普通号。"
            )
            phone.click("button[name=rating][value='5']")
            expect(phone.locator("[data-testid=rating]")).to_contain_text("5")
            phone.goto(f"{live.front}/h5/notifications")
            expect(phone.locator("[data-kind=message_reply]")).to_have_count(1)
            assert problems == []
        finally:
            browser.close()


def test_a_script_in_an_article_never_runs(live: Live) -> None:
    from playwright.sync_api import expect, sync_playwright

    user = live.sim.add_user("读者")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            problems: list[str] = []
            desk = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
            staff = desk.new_page()
            _watch(staff, problems)
            staff.goto(f"{live.front}/console/")
            staff.fill("input[name=username]", "kefu")
            staff.fill("input[name=password]", PASSWORD)
            # A fresh code: the one of the previous test may not be used twice.
            staff.fill("input[name=code]", _next_code(live.staff_secret))
            staff.click("button.primary")
            expect(staff).to_have_url(f"{live.front}/console/")
            staff.goto(f"{live.front}/console/articles/new")
            staff.fill("input[name=title]", "门诊调整通知")
            staff.fill(
                "textarea[name=body_html]",
                f"<p>下周起调整。</p>{SCRIPT}<a href=\"javascript:document.title='pwned'\">详情</a>"
                "<svg onload=\"document.title='pwned'\"></svg>",
            )
            staff.click("form[action='/console/articles'] button[type=submit]")
            preview = staff.locator("[data-testid=preview]")
            expect(preview).to_contain_text("下周起调整。")
            assert preview.locator("script, svg, [onerror], [onload]").count() == 0
            assert staff.title() != "pwned"
            staff.click("form[action$='/publish'] button")
            expect(staff.locator("main")).to_contain_text("已发布")

            phone_ctx = browser.new_context(locale="zh-CN", viewport=PHONE, is_mobile=True)
            phone_ctx.add_cookies(
                [{"name": "wxsim_openid", "value": user.openid, "url": live.sim_url}]
            )
            phone = phone_ctx.new_page()
            _watch(phone, problems)
            phone.goto(f"{live.front}/h5/news")
            phone.click("text=门诊调整通知")
            body = phone.locator("[data-testid=article-body]")
            expect(body).to_contain_text("下周起调整。")
            body.locator("a").click()  # the javascript: link lost its href: nothing happens
            assert body.locator("script, svg, [onerror], [onload], a[href]").count() == 0
            assert phone.title() != "pwned" and staff.title() != "pwned"
            assert problems == []
        finally:
            browser.close()


def _next_code(secret: str) -> str:
    """The TOTP code of the next 30-second step once it starts (a code is used once)."""
    totp = pyotp.TOTP(secret)
    used = totp.now()
    while totp.now() == used:
        time.sleep(0.5)
    return totp.now()
