"""The card pages end to end: a phone signs in through the WeChat simulator's OAuth, binds
cards verified by the demo HIS with a code from the SMS simulator, switches and unbinds."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from frontdesk.accounts.models import BindingChallenge, CardBinding, Consent
from frontdesk.core.audit import AuditEntry
from frontdesk.sims.his_sim.app import sim_state
from frontdesk.wechat.oa.oauth_routes import SESSION_COOKIE
from tests.accounts.helpers import SimPatient, inbox_size, last_code, sim_patients
from tests.wechat.test_oauth import sign_in


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any) -> Any:
    services = wechat_sim.container.services
    services["his"], services["sms"] = his_gateway, sms_sender
    return wechat_sim


async def phone_of(env: Any, name: str) -> tuple[httpx.AsyncClient, str]:
    """A patient's phone, signed in to our H5 pages through WeChat OAuth."""
    user = env.sim.add_user(name)
    await sign_in(env, user.openid, next_url="/h5/")
    return env.front, user.openid


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def rows(env: Any, model: Any, **where: Any) -> int:
    async with env.container.db.session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int((await s.execute(stmt)).scalar_one())


async def accept(phone: httpx.AsyncClient) -> None:
    page = await phone.get("/h5/consent")
    assert "个人健康信息保护声明" in page.text
    done = await phone.post("/h5/consent", data={"csrf": csrf_of(page)})
    assert (done.status_code, done.headers["location"]) == (303, "/h5/cards/bind")


async def bind(
    phone: httpx.AsyncClient, sms_sim: Any, p: SimPatient, relationship: str = "self"
) -> httpx.Response:
    form = await phone.get("/h5/cards/bind")
    started = await phone.post(
        "/h5/cards/bind",
        data={
            "csrf": csrf_of(form),
            "card_no": p.card_no,
            "holder_name": p.name,
            "id_or_phone_last4": p.id_last4,
            "relationship": relationship,
        },
    )
    assert started.status_code == 303, started.text
    code_page = await phone.get(started.headers["location"])
    assert "验证码已发送" in code_page.text
    return await phone.post(
        started.headers["location"],
        data={"csrf": csrf_of(code_page), "code": await last_code(sms_sim, p.phone)},
    )


async def test_bind_three_cards_switch_and_unbind(env: Any, his_sim: Any, sms_sim: Any) -> None:
    phone, openid = await phone_of(env, "张三")
    home = await phone.get("/h5/")
    assert home.status_code == 200
    assert "您还没有绑定就诊卡" in home.text
    # Binding starts with the privacy notice.
    assert (await phone.get("/h5/cards/bind")).headers["location"] == "/h5/consent"
    await accept(phone)
    patients = await sim_patients(his_sim, count=3)
    for p, rel in zip(patients, ["self", "parent", "child"], strict=True):
        done = await bind(phone, sms_sim, p, rel)
        assert (done.status_code, done.headers["location"]) == (303, "/h5/cards?notice=bound")
    page = await phone.get("/h5/cards")
    assert page.text.count('class="card-item') == 3
    assert "绑定成功" not in page.text  # the notice comes with the redirect only
    for p in patients:
        assert p.card_no in page.text
        assert p.name not in page.text  # names are masked
        assert p.phone not in page.text
    assert "已绑定 3 张，最多 10 张" in page.text
    # Switch to the second card: one tap.
    async with env.container.db.session() as s:
        second = (
            (
                await s.execute(
                    select(CardBinding.card_id)
                    .where(CardBinding.openid == openid)
                    .order_by(CardBinding.id)
                )
            )
            .scalars()
            .all()[1]
        )
    switched = await phone.post(f"/h5/cards/{second}/activate", data={"csrf": csrf_of(page)})
    assert switched.status_code == 303
    home = await phone.get("/h5/")
    assert patients[1].card_no in home.text
    # Unbind it, with a confirmation page first.
    confirm = await phone.get(f"/h5/cards/{second}/unbind")
    assert "确定解除" in confirm.text
    gone = await phone.post(f"/h5/cards/{second}/unbind", data={"csrf": csrf_of(confirm)})
    assert gone.headers["location"] == "/h5/cards?notice=unbound"
    page = await phone.get("/h5/cards")
    assert page.text.count('class="card-item') == 2
    assert patients[1].card_no not in page.text
    assert await rows(env, AuditEntry, action="card.bind", actor=f"patient:{openid}") == 3
    assert await rows(env, AuditEntry, action="card.unbind", actor=f"patient:{openid}") == 1


async def test_signed_out_and_tampered_sessions_reach_nothing(
    env: Any, his_sim: Any, sms_sim: Any
) -> None:
    phone, openid = await phone_of(env, "李四")
    await accept(phone)
    [p] = await sim_patients(his_sim, count=1)
    await bind(phone, sms_sim, p)
    async with env.container.db.session() as s:
        card_id = (await s.execute(select(CardBinding.card_id))).scalar_one()
    cookie = phone.cookies[SESSION_COOKIE]
    for tampered in (None, cookie[:-3] + "abc", "o" + cookie):
        phone.cookies.clear()
        if tampered:
            phone.cookies.set(SESSION_COOKIE, tampered)
        for method, path in [
            ("GET", "/h5/"),
            ("GET", "/h5/cards"),
            ("GET", f"/h5/cards/{card_id}/unbind"),
            ("POST", f"/h5/cards/{card_id}/unbind"),
            ("POST", f"/h5/cards/{card_id}/activate"),
            ("POST", "/h5/consent/withdraw"),
        ]:
            response = await phone.request(method, path, data={"csrf": "x"})
            assert response.status_code == 303, (method, path)
            assert response.headers["location"].startswith("/wechat/oauth/start?next=")
    assert await rows(env, CardBinding, openid=openid) == 1
    assert await rows(env, Consent, openid=openid) == 1


async def test_another_accounts_card_ids_get_nothing(env: Any, his_sim: Any, sms_sim: Any) -> None:
    """IDOR: every card endpoint with someone else's card id is 'not found'."""
    owner, owner_id = await phone_of(env, "王五")
    await accept(owner)
    [p] = await sim_patients(his_sim, count=1)
    await bind(owner, sms_sim, p)
    async with env.container.db.session() as s:
        card_id = (await s.execute(select(CardBinding.card_id))).scalar_one()
    owner.cookies.clear()
    other, _ = await phone_of(env, "赵六")
    page = await other.get("/h5/cards")
    token = csrf_of(await other.get("/h5/settings"))  # a valid token of the other account
    assert p.card_no not in page.text
    for method, path in [
        ("GET", f"/h5/cards/{card_id}/unbind"),
        ("POST", f"/h5/cards/{card_id}/unbind"),
        ("POST", f"/h5/cards/{card_id}/activate"),
        ("GET", "/h5/cards/999999/unbind"),
    ]:
        response = await other.request(
            method, path, data={"csrf": token}, headers={"Accept": "text/html"}
        )
        assert response.status_code == 404, (method, path)
        assert p.card_no not in response.text
    assert await rows(env, CardBinding, openid=owner_id) == 1
    async with env.container.db.session() as s:
        binding = (await s.execute(select(CardBinding))).scalar_one()
    assert (binding.unbound_at, binding.is_active) == (None, True)


async def test_forged_or_missing_csrf_changes_nothing(env: Any) -> None:
    phone, openid = await phone_of(env, "钱七")
    for data in ({}, {"csrf": "0" * 32}, {"csrf": ""}):
        response = await phone.post("/h5/consent", data=data)
        assert response.status_code == 403
    assert await rows(env, Consent, openid=openid) == 0


async def test_bad_bind_forms_are_explained_and_change_nothing(
    env: Any, his_sim: Any, sms_sim: Any
) -> None:
    phone, openid = await phone_of(env, "孙八")
    await accept(phone)
    [p] = await sim_patients(his_sim, count=1)
    form = await phone.get("/h5/cards/bind")
    token = csrf_of(form)
    cases = [
        (
            {
                "card_no": "../../etc",
                "holder_name": p.name,
                "id_or_phone_last4": p.id_last4,
                "relationship": "self",
            },
            422,
            "请检查填写的内容",
        ),
        (
            {
                "card_no": p.card_no,
                "holder_name": "张\x00三",
                "id_or_phone_last4": p.id_last4,
                "relationship": "self",
            },
            422,
            "请检查填写的内容",
        ),
        (
            {
                "card_no": p.card_no,
                "holder_name": p.name,
                "id_or_phone_last4": "12",
                "relationship": "boss",
            },
            422,
            "请检查填写的内容",
        ),
        (
            {
                "card_no": p.card_no,
                "holder_name": "王小二",
                "id_or_phone_last4": p.id_last4,
                "relationship": "self",
            },
            422,
            "与医院登记的信息不一致",
        ),
        (
            {
                "card_no": "99999999",
                "holder_name": p.name,
                "id_or_phone_last4": p.id_last4,
                "relationship": "self",
            },
            422,
            "与医院登记的信息不一致",
        ),
    ]
    for data, status, words in cases:
        response = await phone.post("/h5/cards/bind", data={"csrf": token, **data})
        assert response.status_code == status, data
        assert words in response.text
        assert "<script>" not in response.text
    assert await rows(env, BindingChallenge, openid=openid) == 0
    assert await inbox_size(sms_sim, p.phone) == 0


async def test_wrong_codes_are_counted_then_the_challenge_dies(
    env: Any, his_sim: Any, sms_sim: Any
) -> None:
    phone, openid = await phone_of(env, "周九")
    await accept(phone)
    [p] = await sim_patients(his_sim, count=1)
    form = await phone.get("/h5/cards/bind")
    started = await phone.post(
        "/h5/cards/bind",
        data={
            "csrf": csrf_of(form),
            "card_no": p.card_no,
            "holder_name": p.name,
            "id_or_phone_last4": p.id_last4,
            "relationship": "self",
        },
    )
    url = started.headers["location"]
    right = await last_code(sms_sim, p.phone)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    token = csrf_of(await phone.get(url))
    for left in (4, 3, 2, 1, 0):
        response = await phone.post(url, data={"csrf": token, "code": wrong})
        assert response.status_code == 422
        assert f"还可以尝试 {left} 次" in response.text
    final = await phone.post(url, data={"csrf": token, "code": right})
    assert final.status_code == 422
    assert "验证码已失效" in final.text
    assert await rows(env, CardBinding, openid=openid) == 0


async def test_his_down_says_try_later_and_writes_nothing(env: Any, his_sim: Any) -> None:
    phone, openid = await phone_of(env, "吴十")
    await accept(phone)
    [p] = await sim_patients(his_sim, count=1)
    faults = sim_state(his_sim).faults
    faults.mode, faults.count, faults.path_contains = "error", None, "cards"
    form = await phone.get("/h5/cards/bind")
    response = await phone.post(
        "/h5/cards/bind",
        data={
            "csrf": csrf_of(form),
            "card_no": p.card_no,
            "holder_name": p.name,
            "id_or_phone_last4": p.id_last4,
            "relationship": "self",
        },
    )
    assert response.status_code == 503
    assert "医院系统暂时无法访问" in response.text
    assert await rows(env, BindingChallenge, openid=openid) == 0


async def test_binding_attempts_are_rate_limited(env: Any, his_sim: Any) -> None:
    phone, openid = await phone_of(env, "郑一")
    await accept(phone)
    [p] = await sim_patients(his_sim, count=1)
    token = csrf_of(await phone.get("/h5/cards/bind"))
    statuses = []
    for i in range(12):
        response = await phone.post(
            "/h5/cards/bind",
            data={
                "csrf": token,
                "card_no": f"8{i:07d}",
                "holder_name": p.name,
                "id_or_phone_last4": "0000",
                "relationship": "self",
            },
        )
        statuses.append(response.status_code)
    assert statuses == [422] * 10 + [429, 429]
    assert await rows(env, BindingChallenge, openid=openid) == 0


async def test_withdrawing_consent_unbinds_all(env: Any, his_sim: Any, sms_sim: Any) -> None:
    phone, openid = await phone_of(env, "冯二")
    await accept(phone)
    for p in await sim_patients(his_sim, count=2):
        await bind(phone, sms_sim, p)
    page = await phone.get("/h5/consent/withdraw")
    done = await phone.post("/h5/consent/withdraw", data={"csrf": csrf_of(page)})
    assert done.status_code == 303
    assert "您还没有绑定就诊卡" in (await phone.get("/h5/")).text
    async with env.container.db.session() as s:
        open_bindings = (
            await s.execute(
                select(func.count())
                .select_from(CardBinding)
                .where(CardBinding.openid == openid, CardBinding.unbound_at.is_(None))
            )
        ).scalar_one()
    assert open_bindings == 0


async def test_large_text_and_english(env: Any) -> None:
    phone, _ = await phone_of(env, "陈三")
    page = await phone.get("/h5/settings")
    await phone.post("/h5/settings", data={"csrf": csrf_of(page), "large_text": "1", "lang": "en"})
    home = await phone.get("/h5/")
    assert '<html lang="en" class="large-text">' in home.text
    assert "You have not bound a visit card yet" in home.text


async def test_pages_are_small_and_load_nothing_from_other_hosts(
    env: Any, his_sim: Any, sms_sim: Any
) -> None:
    """Fast on a 4G phone: each page with its stylesheet is well under 100 KB, and nothing
    is fetched from another host (the CSP forbids it as well)."""
    phone, _ = await phone_of(env, "林五")
    await accept(phone)
    [p] = await sim_patients(his_sim, count=1)
    await bind(phone, sms_sim, p)
    css = await phone.get("/static/h5.css")
    for path in ("/h5/", "/h5/cards", "/h5/cards/bind", "/h5/consent", "/h5/settings"):
        page = await phone.get(path)
        assert page.status_code == 200, path
        assert len(page.content) + len(css.content) < 100_000, path
        assert re.findall(r'(?:src|href)="(?:https?:)?//', page.text) == [], path
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
