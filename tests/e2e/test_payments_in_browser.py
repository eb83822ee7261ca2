"""Paying a pending order on the phone against ``frontdesk demo``: the patient follows, binds
a card, opens 我的 → 缴费, picks the orders, sees the HIS pre-settlement, pays in WeChat's pay
sheet (the simulator), and the page turns to "paid" once our server knows it (notify), then
the receipt shows the hospital settled it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, WECHAT_UA, DemoStack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]


@pytest.fixture
def phone_page() -> Iterator[Any]:
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


def test_pay_pending_orders_on_the_phone(demo_stack: DemoStack, phone_page: Any) -> None:
    from playwright.sync_api import expect

    page = phone_page
    page.goto(f"{demo_stack.wechat}/phone")
    page.fill("#new-user input[name=nickname]", "钱七")
    page.click("#new-user button")
    page.click("#btn-follow")
    expect(page.locator("#menu")).to_contain_text("我的")
    page.click("#menu >> text=我的")
    page.click("#menu >> text=缴费")
    h5 = page.frame_locator("#h5-frame")
    expect(h5.locator("h1.bar-title")).to_have_text("门诊缴费")
    # Bind a card first (privacy notice, SMS code).
    patient = demo_stack.patients(4)[3]
    h5.locator("a.btn.primary", has_text="绑定").click()
    h5.locator("button", has_text="同意并继续").click()
    h5.locator("input[name=card_no]").fill(patient["card_no"])
    h5.locator("input[name=holder_name]").fill(patient["name"])
    h5.locator("input[name=id_or_phone_last4]").fill(patient["last4"])
    h5.locator("button", has_text="下一步").click()
    h5.locator("input[name=code]").fill(demo_stack.last_code(patient["phone"]))
    h5.locator("button", has_text="确认").click()
    expect(h5.locator("[role=status]")).to_have_text("绑定成功")

    page.click("#menu >> text=我的")
    page.click("#menu >> text=缴费")
    expect(h5.locator("article.order")).to_have_count(2)
    boxes = h5.locator("input[name=order]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    h5.locator("button", has_text="计算所选项目费用").click()
    expect(h5.locator("section.presettle")).to_be_visible()
    self_pay = h5.locator("section.presettle dd.self-pay").inner_text()
    h5.locator("#pay-start").click()
    expect(h5.locator("#pay-state")).to_have_attribute("data-state", "pending")
    h5.locator("#pay-button").click()
    sheet = page.frame_locator("#pay-frame")
    expect(page.locator("#pay-hook")).to_be_visible()
    expect(sheet.locator("body")).to_contain_text(self_pay.lstrip("¥"))
    sheet.locator("button", has_text="支付").first.click()
    # Our page learns it from our server (WeChat's notify), not from the phone.
    expect(h5.locator("#pay-state")).to_have_attribute("data-state", "paid", timeout=20_000)
    h5.locator("a", has_text="电子收据").click()
    expect(h5.locator("section.receipt")).to_contain_text(self_pay)
    for _ in range(20):
        if "医院已结算" in h5.locator("section.receipt").inner_text():
            break
        page.wait_for_timeout(500)
        h5.locator("a.bar-back").click()
        h5.locator("a", has_text="电子收据").first.click()
    expect(h5.locator("section.receipt")).to_contain_text("医院已结算")
