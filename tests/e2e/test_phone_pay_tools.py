"""The phone page's WeChat Pay tools in a real browser against ``frontdesk demo``: an H5
page asks for ``getBrandWCPayRequest``, the pay sheet checks paySign, the patient pays and
the H5 page gets the result; the payment code for the window; the SMS inbox."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest

from frontdesk.wechat.pay.client import build_from_settings
from frontdesk.wechat.pay.port import JsapiOrder
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, WECHAT_UA, DemoStack

T = TypeVar("T")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]


@pytest.fixture
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1100, "height": 860}, user_agent=WECHAT_UA, locale="zh-CN"
        )
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def _order(stack: DemoStack, openid: str) -> tuple[str, dict[str, str]]:
    """Place a JSAPI order with the real adapter, as the payments feature will."""

    async def run() -> tuple[str, dict[str, str]]:
        pay = build_from_settings(stack.settings())
        assert pay is not None
        try:
            out_trade_no = "T" + uuid.uuid4().hex[:20].upper()
            prepay = await pay.create_jsapi_order(
                JsapiOrder(
                    out_trade_no=out_trade_no,
                    description="门诊缴费-检验",
                    amount_fen=2350,
                    openid=openid,
                )
            )
            return out_trade_no, pay.jsapi_pay_params(prepay).as_bridge_dict()
        finally:
            await pay.aclose()

    return _in_thread(run())


def _state(stack: DemoStack, out_trade_no: str) -> str:
    async def run() -> str:
        pay = build_from_settings(stack.settings())
        assert pay is not None
        try:
            return str((await pay.query_order(out_trade_no)).state.value)
        finally:
            await pay.aclose()

    return _in_thread(run())


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on its own loop (Playwright's sync API holds this thread's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_pay_sheet_payment_code_and_sms_inbox(demo_stack: DemoStack, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(f"{demo_stack.wechat}/phone")
    page.fill("#new-user input[name=nickname]", "王五")
    page.click("#new-user button")
    page.click("#btn-follow")
    expect(page.locator("#menu")).to_contain_text("我的")
    openid = page.evaluate("window.wxsim.state.openid")
    # Open one of our H5 pages in the phone, signed in.
    page.click("#menu >> text=我的")
    page.click("#menu >> text=就诊卡")
    h5 = page.frame_locator("#h5-frame")
    expect(h5.locator("h1.bar-title")).to_have_text("我的就诊卡")

    out_trade_no, params = _order(demo_stack, openid)
    frame = page.frame(url=lambda u: u.startswith(demo_stack.web))
    assert frame is not None
    frame.evaluate(
        """params => {
        window.payResults = [];
        window.addEventListener("message", ev => {
            const d = ev.data || {};
            if (d.type === "wechat-sim-pay-result") window.payResults.push(d.result);
        });
        parent.postMessage({type: "wechat-sim-pay-request", params: params}, "*");
    }""",
        params,
    )
    sheet = page.frame_locator("#pay-frame")
    expect(page.locator("#pay-hook")).to_be_visible()
    expect(sheet.locator("body")).to_contain_text("23.50")
    sheet.locator("button", has_text="支付").first.click()
    expect(page.locator("#pay-hook")).to_be_hidden()
    page.wait_for_function("() => true")
    results = frame.evaluate("window.payResults")
    assert results and "ok" in str(results[0])
    assert _state(demo_stack, out_trade_no) == "SUCCESS"

    # The payment code for the window to scan.
    page.select_option("#paycode select", "userpaying_success")
    page.click("#paycode button")
    expect(page.locator("#paycode-digits")).to_have_text(
        re.compile(r"^\d{4} \d{4} \d{4} \d{4} \d{2}$")
    )

    # The SMS inbox shows codes texted to a number.
    [patient] = demo_stack.patients(1)
    page.fill("#sms input[name=phone]", patient["phone"])
    page.click("#sms button")
    texts = [
        m["text"]
        for m in httpx.get(f"{demo_stack.sms}/sim/inbox", params={"phone": patient["phone"]}).json()
    ]
    if texts:  # codes texted while binding in another test of this demo
        expect(page.locator("#sms-list li")).to_have_text(list(reversed(texts)))
    else:
        expect(page.locator("#sms-list")).to_have_text("没有短信")
    # A number with no messages says so.
    page.fill("#sms input[name=phone]", "13000000000")
    page.click("#sms button")
    expect(page.locator("#sms-list")).to_have_text("没有短信")
