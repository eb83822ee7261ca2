"""Every payment endpoint against every kind of caller: the card's own account gets its data;
another account gets "not found" (the same answer as for ids that do not exist) and changes
nothing; a signed-out phone is sent to WeChat sign-in."""

from __future__ import annotations

from typing import Any

import httpx
from tests.billing.conftest import World
from tests.billing.helpers import (
    csrf_of,
    drain,
    his_rows,
    his_unpaid,
    pay_params,
    phone_pays,
    snapshot,
    start_payment,
)


def read_endpoints(payment_id: int, order_id: str) -> list[str]:
    return [
        f"/h5/payments/{payment_id}",
        f"/h5/payments/{payment_id}/status.json",
        f"/h5/payments/{payment_id}/receipt",
        f"/h5/payments/orders/{order_id}",
    ]


async def test_idor_matrix_over_every_payment_endpoint(
    world: World, his_sim: Any, pay_sim: Any
) -> None:
    from frontdesk.sims.his_sim import models as hm

    env = world.env
    ids = [o.id for o in await his_unpaid(his_sim, world.mine.card_no)]
    payment_id, page = await start_payment(world.alice, ids)
    await phone_pays(pay_sim, pay_params(page), world.alice_openid)
    await drain(env.container)
    # The owner sees every endpoint.
    for url in read_endpoints(payment_id, ids[0]):
        assert (await world.alice.get(url)).status_code == 200, url
    # Another account: not found, like an id that does not exist; nothing revealed.
    for url in read_endpoints(payment_id, ids[0]):
        theirs = await world.bob.get(url)
        missing = await world.bob.get(
            url.replace(str(payment_id), "999999").replace(ids[0], "O999999999")
        )
        assert theirs.status_code == missing.status_code == 404, url
        assert world.mine.card_no not in theirs.text
    # Lists show only the caller's active card.
    for url in ("/h5/payments", "/h5/payments/paid", "/h5/payments/refunds"):
        listing = await world.bob.get(url)
        assert listing.status_code == 200
        assert f'data-payment="{payment_id}"' not in listing.text
        assert all(f'data-order="{i}"' not in listing.text for i in ids)
    # Writes naming the other account's orders and items change nothing.
    token = csrf_of(await world.bob.get("/h5/cards/bind"))
    before = await snapshot(env.container)
    items = [i.id for i in await his_rows(his_sim, hm.order_item, order_id=ids[0])]
    assert (
        await world.bob.post("/h5/payments", data={"csrf": token, "order": ids})
    ).status_code == 404
    assert (
        await world.bob.post("/h5/payments/refunds", data={"csrf": token, "item": items})
    ).status_code == 409
    assert await snapshot(env.container) == before
    # Signed out: sent to WeChat sign-in, nothing shown.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=env.front_app), base_url="http://testserver"
    ) as signed_out:
        for url in [
            *read_endpoints(payment_id, ids[0]),
            "/h5/payments",
            "/h5/payments/paid",
            "/h5/payments/refunds",
        ]:
            answer = await signed_out.get(url)
            assert answer.status_code in {303, 401}, url
            assert world.mine.card_no not in answer.text
        for url in ("/h5/payments", "/h5/payments/refunds"):
            assert (await signed_out.post(url, data={"order": ids})).status_code in {303, 401}
    assert await snapshot(env.container) == before
