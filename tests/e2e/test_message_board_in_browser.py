"""The message board across the whole system, in a real browser against ``frontdesk demo``:
a patient writes in the WeChat simulator's chat window, the text lands on the message
board, customer service answers in the console (signed in with password and TOTP), and the
reply reaches the phone as a template message whose link opens the thread."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from frontdesk.demo import DEMO_ADMIN, DEMO_ADMIN_PASSWORD
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, WECHAT_UA, DemoStack, fresh_totp_code

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"
    ),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _totp_secret(stack: DemoStack) -> str:
    found = re.search(r"TOTP secret, shown once\): ([A-Z2-7]+)", stack.output.read_text())
    assert found is not None, "the demo did not print the admin's TOTP secret"
    return found.group(1)


def test_chat_text_is_answered_from_the_console_and_the_reply_reaches_the_phone(
    demo_stack: DemoStack, browser: Any
) -> None:
    from playwright.sync_api import expect

    phone = browser.new_context(
        viewport={"width": 1100, "height": 860}, user_agent=WECHAT_UA, locale="zh-CN"
    ).new_page()
    phone.goto(f"{demo_stack.wechat}/phone")
    phone.fill("#new-user input[name=nickname]", "赵六")
    phone.click("#new-user button")
    phone.click("#btn-follow")
    expect(phone.locator("#chat")).to_contain_text("欢迎关注")
    question = "请问周六上午有没有皮肤科门诊"
    phone.fill("#composer input[name=text]", question)
    phone.click("#composer button")
    expect(phone.locator("#chat")).to_contain_text(question)

    desk = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN").new_page()
    desk.goto(f"{demo_stack.web}/console/")
    desk.fill("input[name=username]", DEMO_ADMIN)
    desk.fill("input[name=password]", DEMO_ADMIN_PASSWORD)
    desk.fill("input[name=code]", fresh_totp_code(_totp_secret(demo_stack)))
    desk.click("button.primary")
    expect(desk).to_have_url(f"{demo_stack.web}/console/")
    # The worker moves the chat text onto the board within a poll or two.
    deadline = time.monotonic() + 20
    while True:
        desk.goto(f"{demo_stack.web}/console/messages")
        if question in desk.locator("[data-testid=inbox]").inner_text():
            break
        assert time.monotonic() < deadline, "the chat text never reached the message board"
        time.sleep(0.5)
    desk.locator("[data-testid=inbox] tr", has_text=question).locator("a").first.click()
    answer = "周六上午皮肤科有普通门诊，8:00开始"
    desk.fill("textarea[name=body]", answer)
    desk.locator("form[action$='/reply'] button").click()

    # The reply comes to the phone as a template message; its link opens the thread.
    card = phone.locator("#chat .card").last
    expect(card).to_be_visible(timeout=20_000)
    card.click()
    h5 = phone.frame_locator("#h5-frame")
    expect(h5.locator("[data-testid=posts]")).to_contain_text(question)
    expect(h5.locator("[data-testid=posts] [data-author=staff]")).to_contain_text(answer)
