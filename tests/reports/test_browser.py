"""Reports in a real browser at a phone's size: Debian's Chromium driven by Playwright.

One event loop in a thread of its own serves the front app and the WeChat simulator with
uvicorn on loopback; the front reaches the demo HIS through the real bridge client (over
ASGITransport, in the same loop). The patient opens the "report ready" message the
simulator received, signs in through the simulator's OAuth page, sees the flags, opens a
trend, and downloads the PDF, which is read back with pypdf.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pypdf import PdfReader
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts import service as accounts
from frontdesk.accounts.schemas import BindRequest, Relationship
from frontdesk.container import build_container
from frontdesk.core import migrate
from frontdesk.core.clock import get_clock, set_clock
from frontdesk.core.database import create_engine
from frontdesk.core.settings import Settings
from frontdesk.his.bridge import HttpHisGateway
from frontdesk.reports import jobs as _report_jobs  # noqa: F401 - registers the handlers
from frontdesk.sims.his_sim import service as his_sim_service
from frontdesk.sims.his_sim.app import create_his_sim_app, seed, sim_state
from frontdesk.sims.wechat_sim.app import create_sim_app
from frontdesk.sims.wechat_sim.platform import SimConfig
from frontdesk.web.app import create_app
from frontdesk.wechat.oa import jobs as _wechat_jobs  # noqa: F401 - registers the send job
from tests.accounts.helpers import sim_patients
from tests.reports.helpers import lab_item, poll_his, put_lab_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
PHONE: Any = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    front: str
    message: dict[str, Any] = field(default_factory=dict)
    patient_name: str = ""
    card_no: str = ""
    error: BaseException | None = None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("reports-browser")
    front_port, sim_port = _free_port(), _free_port()
    front = f"http://127.0.0.1:{front_port}"
    settings = Settings(
        env="test",
        database_url=f"sqlite+aiosqlite:///{folder / 'front.db'}",
        secret_key="r" * 40,
        public_base_url=front,
        wechat_api_base=f"http://127.0.0.1:{sim_port}",
        wechat_oauth_authorize_url=f"http://127.0.0.1:{sim_port}/connect/oauth2/authorize",
        wechat_sim_phone_origin=None,
        _env_file=None,
    )
    result = Live(front=front)
    ready, stop = threading.Event(), threading.Event()
    previous_clock = get_clock()

    async def main() -> None:
        engine = create_engine(settings.database_url)
        await migrate.upgrade(engine)
        await engine.dispose()
        container = build_container(settings)
        his_app = create_his_sim_app(
            database_url=f"sqlite+aiosqlite:///{folder / 'his.db'}", key_id="k", secret="s" * 32
        )
        await seed(his_app, today=container.clock.today())
        his_http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=his_app), base_url="http://his"
        )
        his = HttpHisGateway(base_url="http://his", key_id="k", secret="s" * 32, client=his_http)
        container.services["his"] = his
        sim_app = create_sim_app(
            SimConfig(
                appid=settings.wechat_appid,
                appsecret=settings.wechat_appsecret.get_secret_value(),
                token=settings.wechat_token.get_secret_value(),
                encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
                callback_url=f"{front}/wechat/callback",
                front_base_url=front,
            )
        )
        servers = [
            uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
            for app, port in (
                (create_app(settings, container=container), front_port),
                (sim_app, sim_port),
            )
        ]
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        while not all(s.started for s in servers):
            await asyncio.sleep(0.05)
        # A patient who follows the account and bound a card (the SMS step is tested in
        # the accounts suite; here the service binds with it switched off).
        user = sim_app.state.platform.add_user("张三", following=True)
        [p] = await sim_patients(his_app, count=1)
        result.patient_name, result.card_no = p.name, p.card_no
        now = container.clock.now()
        async with container.db.session() as s:
            await accounts.accept_notice(s, openid=user.openid, version="2026-11", now=now)
            await accounts.start_binding(
                s,
                his=his,
                sms=None,
                openid=user.openid,
                request=BindRequest(
                    card_no=p.card_no,
                    holder_name=p.name,
                    id_or_phone_last4=p.id_last4,
                    relationship=Relationship.self_,
                ),
                policy=accounts.BindingPolicy(sms_enabled=False),
                secret=settings.secret_key.get_secret_value(),
                now=now,
            )
        await poll_his(container)
        for n, (days, value, flag, critical) in enumerate(
            [(200, "5.4", "normal", False), (90, "7.9", "high", False), (0, "25.3", "high", True)]
        ):
            await put_lab_report(
                his_app,
                report_id=f"RB{n}",
                card_no=p.card_no,
                sampled_at=now - timedelta(days=days, hours=4),
                items=[
                    lab_item("GLU", "葡萄糖", value, abnormal=flag, critical=critical),
                    lab_item("HBsAg", "乙肝表面抗原", "阴性", "", "阴性"),
                    lab_item("K", "钾", "3.2", "mmol/L", "", abnormal="low"),
                ],
                reviewed=n < 2,
            )
        async with AsyncSession(sim_state(his_app).engine) as s, s.begin():
            await his_sim_service.review_report(s, "RB2")
        await poll_his(container)
        result.message = next(
            m
            for m in sim_app.state.platform.sent_templates
            if m["template_id"] == "TPL_REPORT_READY"
        )
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
        await his_http.aclose()
        await container.aclose()
        await sim_state(his_app).engine.dispose()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            result.error = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60), "the live servers did not start in 60 s"
    if result.error is not None:
        raise result.error
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=30)
        set_clock(previous_clock)


def test_open_the_message_see_flags_open_a_trend_and_download_the_pdf(
    live: Live, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert live.message["url"] == f"{live.front}/h5/reports/RB2"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            phone = browser.new_context(
                locale="zh-CN",
                viewport=PHONE,
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
                accept_downloads=True,
            )
            page = phone.new_page()
            problems: list[str] = []
            # CSP violations show as console errors; failed loads as responses >= 400 (the
            # browser's own favicon requests aside: neither server has one).
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
            # The message's link: not signed in, so through WeChat's consent page first.
            page.goto(live.message["url"])
            expect(page.get_by_text("请选择用户")).to_be_visible()
            page.get_by_role("link", name="张三").click()
            expect(page).to_have_url(live.message["url"])
            # The flags, in words; the critical notice; the change since last time.
            expect(page.locator(".critical-notice")).to_contain_text("请立即联系医院")
            glu = page.locator('tr[data-code="GLU"]')
            expect(glu.locator(".flag")).to_have_text("!!↑ 危急值·偏高")
            expect(glu.locator(".change")).to_contain_text("上次 7.9 ↑")
            expect(page.locator('tr[data-code="K"] .flag')).to_have_text("↓ 偏低")
            expect(page.locator('tr[data-code="K"] .range')).to_have_text("未提供")
            # The stylesheet applied (CSP allows our own file): critical marks are inverse.
            assert (
                page.eval_on_selector('tr[data-code="GLU"] .flag', "e => getComputedStyle(e).color")
                == "rgb(255, 255, 255)"
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            # The trend of the glucose item.
            glu.get_by_role("link", name="葡萄糖").click()
            expect(page).to_have_url(f"{live.front}/h5/reports/RB2/trend/GLU")
            chart = page.locator("svg.trend-chart")
            expect(chart).to_be_visible()
            expect(chart.locator("g.point")).to_have_count(3)
            expect(chart.locator("g.mark-critical_high")).to_have_count(1)
            expect(chart.locator("rect.band")).to_have_count(1)
            expect(page.locator("table.trend-table tbody tr")).to_have_count(3)
            box = chart.bounding_box()
            assert box is not None and box["width"] <= PHONE["width"]
            page.screenshot(path=str(tmp_path / "trend.png"), full_page=True)
            # Back to the report and download the PDF.
            page.go_back()
            with page.expect_download() as info:
                page.get_by_role("link", name="下载 PDF 报告").click()
            download = info.value
            assert download.suggested_filename.startswith("report-RB2-")
            saved = tmp_path / "report.pdf"
            download.save_as(saved)
            text = PdfReader(io.BytesIO(saved.read_bytes())).pages[0].extract_text()
            for expected in ("检验报告", "葡萄糖", "25.3", "危急值", live.card_no, "RB2"):
                assert expected in text, expected
            assert live.patient_name not in text
            assert problems == []
        finally:
            browser.close()
