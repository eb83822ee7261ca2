"""IDOR: every endpoint of the window work (cashier API, paper QR, its H5 page, the console
pages) refuses another card's data, answering as for data that does not exist — and the
table below must name every such route, so a new endpoint without a case fails here."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi.routing import APIRoute
from tests.billing.conftest import World
from tests.billing.helpers import count, drain, his_unpaid, snapshot
from tests.billing.window_helpers import HisCaller

from frontdesk.billing import models as bm
from frontdesk.core.clock import FrozenClock
from frontdesk.sims.wechat_sim.pay_state import new_auth_code

PREFIXES = ("/front/v1/", "/h5/pay/", "/console/cashier", "/console/payments")


def _window_routes() -> set[tuple[str, str]]:
    # FastAPI keeps included routers opaque: read the routers the app factory includes.
    from frontdesk.web.app import _domain_routers

    out: set[tuple[str, str]] = set()
    for route in [r for router in _domain_routers() for r in router.routes]:
        if isinstance(route, APIRoute) and route.path.startswith(PREFIXES):
            out.update((method, route.path) for method in route.methods or ())
    return out


async def test_no_window_endpoint_shows_or_touches_another_cards_data(
    world: World, his_sim: Any, pay_sim: Any, clock: FrozenClock
) -> None:
    container = world.env.container
    station = HisCaller(world.env.front_app, container.settings, clock)
    mine, family, stranger = world.mine.card_no, world.family.card_no, world.stranger.card_no
    ids = [o.id for o in await his_unpaid(his_sim, mine)]
    stranger_orders = await his_unpaid(his_sim, stranger)
    pre = await container.services["his"].pre_settle(card_no=mine, order_ids=ids)
    paid = await station.post(
        "/front/v1/cashier/payments",
        {
            "request_id": "IDOR-pay-1",
            "card_no": mine,
            "order_ids": ids,
            "auth_code": new_auth_code(),
            "self_pay_fen": pre.self_pay_fen,
        },
    )
    out_trade_no = paid.json()["payment"]["out_trade_no"]
    await drain(container)
    # A paper link for the stranger's visit (Bob's card): Alice must not see it.
    strangers_link = await station.post(
        "/front/v1/paper-qr",
        {"card_no": stranger, "visit_no": stranger_orders[0].visit_no},
    )
    strangers_path = urlsplit(strangers_link.json()["url"]).path
    before = await snapshot(container)
    anonymous = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.env.front_app), base_url="http://testserver"
    )

    async def status_of_payment_read() -> None:
        for card in (stranger, family, "", "6100000000"):
            answer = await station.get(
                f"/front/v1/cashier/payments/{out_trade_no}", f"card_no={card}"
            )
            assert (answer.status_code, answer.json()["code"]) == (
                404,
                "billing_payment_not_found",
            ), card
        own = await station.get(f"/front/v1/cashier/payments/{out_trade_no}", f"card_no={mine}")
        assert own.status_code == 200

    async def pay_for_another_cards_orders() -> None:
        answer = await station.post(
            "/front/v1/cashier/payments",
            {
                "request_id": "IDOR-pay-2",
                "card_no": mine,
                "order_ids": [o.id for o in stranger_orders],
                "auth_code": new_auth_code(),
                "self_pay_fen": 100,
            },
        )
        assert (answer.status_code, answer.json()["code"]) == (404, "billing_order_not_found")

    async def refund_another_cards_payment() -> None:
        for card in (stranger, family):
            answer = await station.post(
                "/front/v1/cashier/refunds",
                {
                    "request_id": f"IDOR-ref-{card}",
                    "card_no": card,
                    "out_trade_no": out_trade_no,
                    "amount_fen": 1,
                    "reason": "越权测试",
                },
            )
            assert (answer.status_code, answer.json()["code"]) == (
                404,
                "billing_payment_not_found",
            )

    async def qr_for_another_cards_visit() -> None:
        answer = await station.post(
            "/front/v1/paper-qr", {"card_no": mine, "visit_no": stranger_orders[0].visit_no}
        )
        assert (answer.status_code, answer.json()["code"]) == (404, "billing_order_not_found")

    async def open_another_cards_link() -> None:
        page = await world.alice.get(strangers_path)
        assert page.status_code == 403 and 'data-paper="unbound"' in page.text
        for o in stranger_orders:
            assert o.id not in page.text
        assert stranger not in page.text

    async def pay_through_another_cards_link() -> None:
        import hashlib
        import hmac

        secret = container.settings.secret_key.get_secret_value().encode()
        csrf = hmac.new(
            secret, f"h5-csrf|{world.alice_openid}".encode(), hashlib.sha256
        ).hexdigest()[:32]
        answer = await world.alice.post(strangers_path, data={"csrf": csrf})
        assert answer.status_code == 403 and 'data-paper="unbound"' in answer.text

    def console(method: str, path: str) -> Any:
        async def check() -> None:
            # A patient (no staff session) is sent to the staff sign-in, nothing shown.
            answer = await (
                world.alice.get(path)
                if method == "GET"
                else world.alice.post(path, data={"card_no": mine, "order": ids})
            )
            assert answer.status_code == 303
            assert answer.headers["location"].startswith("/console/login")
            anon = await (anonymous.get(path) if method == "GET" else anonymous.post(path, data={}))
            assert anon.status_code == 303, path

        return check

    cases = {
        ("GET", "/front/v1/cashier/payments/{out_trade_no}"): status_of_payment_read,
        ("POST", "/front/v1/cashier/payments"): pay_for_another_cards_orders,
        ("POST", "/front/v1/cashier/refunds"): refund_another_cards_payment,
        ("POST", "/front/v1/paper-qr"): qr_for_another_cards_visit,
        ("GET", "/h5/pay/v/{token}"): open_another_cards_link,
        ("POST", "/h5/pay/v/{token}"): pay_through_another_cards_link,
        ("GET", "/console/cashier"): console("GET", "/console/cashier"),
        ("POST", "/console/cashier/pay"): console("POST", "/console/cashier/pay"),
        ("POST", "/console/cashier/native"): console("POST", "/console/cashier/native"),
        ("GET", "/console/payments"): console("GET", "/console/payments"),
        ("GET", "/console/payments/{payment_id}"): console("GET", "/console/payments/1"),
        ("POST", "/console/payments/{payment_id}/refund"): console(
            "POST", "/console/payments/1/refund"
        ),
    }
    assert set(cases) == _window_routes()
    for key, check in cases.items():
        await check()
        assert await snapshot(container) == before, key
    assert await count(container, bm.BillingPayment) == 1
    assert await count(container, bm.BillingRefund) == 0
    await anonymous.aclose()
    await station.aclose()
