"""The window in a real browser against ``frontdesk demo``: the console's cashier page finds a
card's pending orders, takes the HIS pre-settlement and charges a payment code from the
WeChat Pay simulator; the demo HIS prints the next visit's order sheet with the front
server's QR code."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from frontdesk.demo import DEMO_ADMIN, DEMO_ADMIN_PASSWORD
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, DemoStack, fresh_totp_code

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


def _card_with_two_unpaid_visits(stack: DemoStack) -> tuple[str, list[str]]:
    with sqlite3.connect(stack.var / "his-sim.db") as conn:
        rows = conn.execute(
            "SELECT card_no, visit_no FROM his_order WHERE status = 'unpaid' AND visit_no != '' "
            "GROUP BY card_no, visit_no ORDER BY card_no, visit_no"
        ).fetchall()
    visits: dict[str, list[str]] = {}
    for card_no, visit_no in rows:
        visits.setdefault(card_no, []).append(visit_no)
    card_no = next(c for c, v in visits.items() if len(v) >= 2)
    return card_no, visits[card_no]


def _totp_secret(stack: DemoStack) -> str:
    found = re.search(r"TOTP secret, shown once\): ([A-Z2-7]+)", stack.output.read_text())
    assert found is not None, "the demo did not print the admin's TOTP secret"
    return found.group(1)


def test_the_cashier_page_charges_a_payment_code_and_the_his_prints_the_qr(
    demo_stack: DemoStack, browser: Any
) -> None:
    from playwright.sync_api import expect

    card_no, visits = _card_with_two_unpaid_visits(demo_stack)
    desk = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
    problems: list[str] = []
    # Every answer of ours must succeed (the browser's own favicon request aside).
    desk.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    desk.goto(f"{demo_stack.web}/console/")
    desk.fill("input[name=username]", DEMO_ADMIN)
    desk.fill("input[name=password]", DEMO_ADMIN_PASSWORD)
    desk.fill("input[name=code]", fresh_totp_code(_totp_secret(demo_stack)))
    desk.click("button.primary")
    expect(desk).to_have_url(f"{demo_stack.web}/console/")

    desk.locator("nav.sidenav a", has_text="收费窗口").click()
    desk.fill("input[name=card_no]", card_no)
    desk.locator("form.filters button").click()
    first_visit = desk.locator(f'table[data-visit="{visits[0]}"]')
    expect(first_visit).to_be_visible()
    for box in first_visit.locator("input[type=checkbox]").all():
        box.check()
    desk.click("#presettle")
    presettle = desk.locator("[data-self-pay]")
    expect(presettle).to_be_visible()
    self_pay = int(presettle.get_attribute("data-self-pay") or "0")
    assert self_pay > 0

    code = httpx.get(
        f"{demo_stack.wechat}/sim/pay/auth-code", params={"scenario": "success"}, timeout=5
    ).json()["auth_code"]
    desk.fill("input[name=auth_code]", code)
    desk.click("#charge")
    result = desk.locator("[data-result]")
    expect(result).to_have_attribute("data-result", "paid")
    expect(result).to_contain_text("收款成功")
    result.locator("a").click()
    expect(desk.locator("[data-testid=payment] [data-amount]")).to_have_attribute(
        "data-amount", str(self_pay)
    )
    expect(desk.locator("[data-testid=events]")).to_contain_text("payment.paid")

    # The demo HIS prints the other visit's order sheet with the front server's QR code.
    sheet = browser.new_context(locale="zh-CN").new_page()
    sheet.goto(f"{demo_stack.his}/operator")
    sheet.fill("form.open input[name=card_no]", card_no)
    sheet.fill("form.open input[name=visit_no]", visits[1])
    sheet.locator("form.open button").click()
    expect(sheet.locator('[data-qr="link"] svg')).to_be_visible()
    expect(sheet.locator("h1")).to_have_text("门诊缴费单")
    assert problems == []
