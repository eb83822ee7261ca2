"""A patient in a phone-sized Chromium with WeChat's user agent: follows the account in the
WeChat simulator, opens the H5 home from the menu (signed in through WeChat OAuth), accepts
the privacy notice, binds three cards with codes from the SMS simulator, switches, unbinds."""

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
        page = context.new_page()
        try:
            yield page
        finally:
            context.close()
            browser.close()


def test_bind_three_cards_switch_and_unbind_from_the_phone(
    demo_stack: DemoStack, phone_page: Any
) -> None:
    from playwright.sync_api import expect

    page = phone_page
    problems: list[str] = []
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.goto(f"{demo_stack.wechat}/phone")
    page.fill("#new-user input[name=nickname]", "张三")
    page.click("#new-user button")
    expect(page.locator("#user-list")).to_contain_text("张三")
    page.click("#btn-follow")
    expect(page.locator("#chat")).to_contain_text("欢迎关注")
    # The menu the demo pushed: 我的 → 就诊卡 opens our H5 page inside the phone.
    expect(page.locator("#menu")).to_contain_text("我的")
    page.click("#menu >> text=我的")
    page.click("#menu >> text=就诊卡")
    h5 = page.frame_locator("#h5-frame")
    expect(h5.locator("h1.bar-title")).to_have_text("我的就诊卡")
    expect(h5.locator("body")).to_contain_text("您还没有绑定就诊卡")
    frame_width = page.eval_on_selector("#h5-frame", "e => e.getBoundingClientRect().width")
    assert frame_width <= 430  # a phone's width

    patients = demo_stack.patients(3)
    relationships = ["self", "parent", "child"]
    for index, (patient, rel) in enumerate(zip(patients, relationships, strict=True)):
        h5.locator("a.btn.primary", has_text="绑定").click()
        if index == 0:
            expect(h5.locator("body")).to_contain_text("个人健康信息保护声明")
            h5.locator("button", has_text="同意并继续").click()
        h5.locator("input[name=card_no]").fill(patient["card_no"])
        h5.locator("input[name=holder_name]").fill(patient["name"])
        h5.locator("input[name=id_or_phone_last4]").fill(patient["last4"])
        h5.locator("select[name=relationship]").select_option(rel)
        h5.locator("button", has_text="下一步").click()
        expect(h5.locator("body")).to_contain_text("验证码已发送")
        h5.locator("input[name=code]").fill(demo_stack.last_code(patient["phone"]))
        h5.locator("button", has_text="确认").click()
        expect(h5.locator("[role=status]")).to_have_text("绑定成功")
        expect(h5.locator("li.card-item")).to_have_count(index + 1)

    items = h5.locator("li.card-item")
    for patient in patients:
        expect(h5.locator("body")).to_contain_text(patient["card_no"])
        assert patient["name"] not in h5.locator("body").inner_text()
    expect(items.nth(0)).to_have_class("card-item active")
    # Switch: one tap on the third card.
    items.nth(2).locator("button", has_text="使用此卡").click()
    expect(h5.locator("li.card-item").nth(2)).to_have_class("card-item active")
    # Unbind the second card, after a confirmation page.
    h5.locator("li.card-item").nth(1).locator("a", has_text="解除绑定").click()
    expect(h5.locator("body")).to_contain_text("确定解除")
    h5.locator("button.btn.danger").click()
    expect(h5.locator("[role=status]")).to_have_text("已解除绑定")
    expect(h5.locator("li.card-item")).to_have_count(2)
    assert patients[1]["card_no"] not in h5.locator("body").inner_text()
    assert problems == []
