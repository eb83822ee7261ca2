"""A patient books and cancels from a phone-sized Chromium with WeChat's user agent, against
a real ``frontdesk demo`` (web app, worker, HIS/WeChat/SMS simulators): binds a card, then
预约挂号 → department → doctor → a session → a time window → confirm → booked → my
appointments → the appointment → cancel; the HIS registration happens through the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, WECHAT_UA, DemoStack

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


def _bind_a_card(page: Any, h5: Any, demo_stack: DemoStack, patient: dict[str, str]) -> None:
    from playwright.sync_api import expect

    page.click("#menu >> text=我的")
    page.click("#menu >> text=就诊卡")
    expect(h5.locator("h1.bar-title")).to_have_text("我的就诊卡")
    h5.locator("a.btn.primary", has_text="绑定").click()
    expect(h5.locator("body")).to_contain_text("个人健康信息保护声明")
    h5.locator("button", has_text="同意并继续").click()
    h5.locator("input[name=card_no]").fill(patient["card_no"])
    h5.locator("input[name=holder_name]").fill(patient["name"])
    h5.locator("input[name=id_or_phone_last4]").fill(patient["last4"])
    h5.locator("select[name=relationship]").select_option("self")
    h5.locator("button", has_text="下一步").click()
    expect(h5.locator("body")).to_contain_text("验证码已发送")
    h5.locator("input[name=code]").fill(demo_stack.last_code(patient["phone"]))
    h5.locator("button", has_text="确认").click()
    expect(h5.locator("[role=status]")).to_have_text("绑定成功")


def test_book_and_cancel_from_the_phone(demo_stack: DemoStack, phone_page: Any) -> None:
    from playwright.sync_api import expect

    page = phone_page
    problems: list[str] = []
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.goto(f"{demo_stack.wechat}/phone")
    page.fill("#new-user input[name=nickname]", "王五")
    page.click("#new-user button")
    expect(page.locator("#user-list")).to_contain_text("王五")
    page.click("#btn-follow")
    expect(page.locator("#chat")).to_contain_text("欢迎关注")
    h5 = page.frame_locator("#h5-frame")
    patient = demo_stack.patients(8)[
        7
    ]  # its own patient: the demo is shared (one SMS a minute per phone)
    _bind_a_card(page, h5, demo_stack, patient)
    frame_width = page.eval_on_selector("#h5-frame", "e => e.getBoundingClientRect().width")
    assert frame_width <= 430  # a phone's width

    # 预约挂号: the catalog comes from the HIS through the worker; the recurring sync runs
    # every 10 minutes, so queue one now as an operator would (`frontdesk catalog-sync`).
    subprocess.run(
        [sys.executable, "-m", "frontdesk", "catalog-sync"],
        cwd=demo_stack.var.parent,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(demo_stack.var.parent),
            "PYTHONPATH": str(ROOT / "src"),
        },
        check=True,
        capture_output=True,
    )
    departments = h5.locator("li[data-dept] a")
    deadline = time.monotonic() + 90
    while True:
        if page.locator("#btn-back").is_visible():
            page.click("#btn-back")  # close the H5 view to reach the menu again
        page.click("#menu >> text=预约挂号")
        h5.locator("body").wait_for()
        if departments.count() > 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert departments.count() > 0, "the demo's catalog was never synced"

    # Department → doctor → a bookable session (some doctor has one within the window).
    # Each step waits for the next page's own back link before reading it, so nothing is
    # counted on the page being left.
    on_departments = "form.search"
    on_doctors = "a.bar-back[href='/h5/booking']"
    on_doctor = "a.bar-back[href^='/h5/booking/departments/']"
    booked = False
    for d in range(departments.count()):
        departments.nth(d).click()
        h5.locator(on_doctors).wait_for()
        doctors = h5.locator("a[href^='/h5/booking/doctors/']")
        for n in range(doctors.count()):
            doctors.nth(n).click()
            h5.locator(on_doctor).wait_for()
            sessions = h5.locator("a[data-state=open]")
            if sessions.count() == 0:
                h5.locator("a.bar-back").click()
                h5.locator(on_doctors).wait_for()
                continue
            sessions.last.click()  # the latest day: cancellable until the day before
            h5.locator("a[href$='/confirm']").first.click()
            expect(h5.locator("body")).to_contain_text(patient["card_no"])
            h5.locator("button.btn.primary").click()
            booked = True
            break
        if booked:
            break
        h5.locator("a.bar-back").click()
        h5.locator(on_departments).wait_for()
    assert booked, "no bookable session in the demo's catalog"

    # The booked page, then my appointments, then the appointment, then cancel.
    expect(h5.locator("[role=status]")).to_be_visible()
    expect(h5.locator("button.btn.danger")).to_be_visible()
    h5.locator("a.bar-back").click()
    expect(h5.locator("a[href^='/h5/booking/appointments/']")).to_have_count(1)
    h5.locator("a[href^='/h5/booking/appointments/']").first.click()
    h5.locator("button.btn.danger").click()
    expect(h5.locator("[role=status]")).to_be_visible()
    expect(h5.locator("button.btn.danger")).to_have_count(0)
    h5.locator("a.bar-back").click()
    expect(h5.locator("a[href^='/h5/booking/appointments/']")).to_have_count(1)
    assert problems == []
