"""/wechat/callback on the test's rolled-back transaction: all three modes, every event we
act on, retries, and each bad-input class refused with nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import xmltodict  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from frontdesk.container import build_container
from frontdesk.core.clock import FrozenClock
from frontdesk.core.database import Database
from frontdesk.core.inbox import InboxMessage
from frontdesk.core.settings import Settings
from frontdesk.web.app import create_app
from frontdesk.wechat.oa import service
from frontdesk.wechat.oa.models import (
    TemplateMessage,
    WeChatTextMessage,
    WeChatUser,
)
from tests.wechat.helpers import (
    decrypt_reply,
    event,
    plain_request,
    safe_request,
    sign,
    text_message,
    xml,
)

OPENID = "oPATIENT0000000000000000001"
BOARD_ACK = "您的留言已收到，已转到留言板，工作人员会尽快回复。"

Front = Callable[[str], Any]


@pytest.fixture
def front(
    settings: Settings, db: AsyncSession, clock: FrozenClock, engine: AsyncEngine
) -> Callable[..., Any]:
    """A client to our app in a given callback mode, on the test's transaction."""

    @asynccontextmanager
    async def make(mode: str = "safe") -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
        mode_settings = settings.model_copy(update={"wechat_callback_mode": mode})
        container = build_container(mode_settings, clock=clock, db=Database.from_engine(engine))

        @asynccontextmanager
        async def provider() -> AsyncIterator[AsyncSession]:
            async with db.begin_nested():
                yield db

        app = create_app(mode_settings, container=container, session_provider=provider)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, mode_settings
        await container.services["wechat"].aclose()

    return make


def now_ts(clock: FrozenClock) -> int:
    return int(clock.now().timestamp())


async def counts(db: AsyncSession) -> tuple[int, int, int]:
    inbox = (await db.execute(select(func.count()).select_from(InboxMessage))).scalar_one()
    texts = (await db.execute(select(func.count()).select_from(WeChatTextMessage))).scalar_one()
    users = (await db.execute(select(func.count()).select_from(WeChatUser))).scalar_one()
    return inbox, texts, users


# ------------------------------------------------------------------ URL verification


async def test_get_verification_echoes_echostr(
    front: Any, clock: FrozenClock, settings: Settings
) -> None:
    ts = str(now_ts(clock))
    async with front("safe") as (client, s):
        query = {
            "signature": sign(s.wechat_token.get_secret_value(), ts, "42"),
            "timestamp": ts,
            "nonce": "42",
            "echostr": "5837397520665580082",
        }
        response = await client.get("/wechat/callback", params=query)
        assert response.status_code == 200
        assert response.text == "5837397520665580082"
        bad = await client.get("/wechat/callback", params={**query, "signature": "0" * 40})
        assert bad.status_code == 403
        assert bad.json()["error"]["code"] == "wechat_callback_refused"


# ------------------------------------------------------------------ the three modes


async def test_safe_mode_text_goes_to_the_board_and_reply_is_encrypted(
    front: Any, clock: FrozenClock, db: AsyncSession
) -> None:
    ts = now_ts(clock)
    async with front("safe") as (client, s):
        body = xml(text_message(OPENID, "我想问一下停车", msg_id=7001, at=ts))
        query, content = safe_request(s, body, timestamp=ts)
        response = await client.post("/wechat/callback", params=query, content=content)
        assert response.status_code == 200
        reply = decrypt_reply(s, response.content, timestamp=ts)
        assert reply["ToUserName"] == OPENID
        assert reply["FromUserName"] == "gh_0000simhosp"
        assert reply["MsgType"] == "text"
        assert reply["Content"] == BOARD_ACK
        assert int(reply["CreateTime"]) == ts
        # WeChat re-sends the same message: same answer, acted on once.
        again = await client.post("/wechat/callback", params=query, content=content)
        assert decrypt_reply(s, again.content, timestamp=ts)["Content"] == BOARD_ACK
    rows = (await db.execute(select(WeChatTextMessage))).scalars().all()
    assert [(r.openid, r.msg_id, r.content, r.board_state) for r in rows] == [
        (OPENID, "7001", "我想问一下停车", "new")
    ]
    assert await counts(db) == (1, 1, 0)


async def test_plaintext_mode_keyword_reply(
    front: Any, clock: FrozenClock, db: AsyncSession
) -> None:
    await service.save_keyword_reply(
        db, keyword="停车", reply="停车场在门诊楼北侧。", match="contains", now=clock.now()
    )
    ts = now_ts(clock)
    async with front("plaintext") as (client, s):
        query, content = plain_request(
            s, xml(text_message(OPENID, "请问停车在哪", msg_id=7002, at=ts)), timestamp=ts
        )
        response = await client.post("/wechat/callback", params=query, content=content)
    assert response.status_code == 200
    reply = xmltodict.parse(response.content)["xml"]
    assert reply["Content"] == "停车场在门诊楼北侧。"
    assert reply["ToUserName"] == OPENID
    assert await counts(db) == (1, 0, 0)  # answered by keyword: nothing for the board


async def test_compatible_mode_uses_the_encrypted_part(
    front: Any, clock: FrozenClock, db: AsyncSession
) -> None:
    ts = now_ts(clock)
    message = text_message(OPENID, "你好", msg_id=7003, at=ts)
    async with front("compatible") as (client, s):
        # The plaintext copy says something else: only the signed, encrypted part counts.
        query, content = safe_request(
            s, xml(message), timestamp=ts, compatible_fields={**message, "Content": "forged"}
        )
        response = await client.post("/wechat/callback", params=query, content=content)
        assert decrypt_reply(s, response.content, timestamp=ts)["Content"] == BOARD_ACK
    row = (await db.execute(select(WeChatTextMessage))).scalar_one()
    assert row.content == "你好"


# ------------------------------------------------------------------ events


async def post_event(
    client: httpx.AsyncClient, s: Settings, fields: dict[str, Any], ts: int
) -> httpx.Response:
    query, content = safe_request(s, xml(fields), timestamp=ts)
    return await client.post("/wechat/callback", params=query, content=content)


async def test_subscribe_with_scene_then_unsubscribe(
    front: Any, clock: FrozenClock, db: AsyncSession
) -> None:
    ts = now_ts(clock)
    async with front() as (client, s):
        response = await post_event(
            client,
            s,
            event(OPENID, "subscribe", at=ts, EventKey="qrscene_card-bind", Ticket="T"),
            ts,
        )
        assert decrypt_reply(s, response.content, timestamp=ts)["Content"].startswith("欢迎关注")
        user = (await db.execute(select(WeChatUser))).scalar_one()
        assert (user.openid, user.following, user.last_scene) == (OPENID, True, "card-bind")
        response = await post_event(
            client, s, event(OPENID, "unsubscribe", at=ts + 1, EventKey=""), ts + 1
        )
        assert response.text == "success"
    await db.refresh(user)
    assert user.following is False
    assert user.unfollowed_at == clock.now()
    assert await service.is_following(db, openid=OPENID) is False


async def test_scan_click_and_view(front: Any, clock: FrozenClock, db: AsyncSession) -> None:
    await service.save_keyword_reply(
        db, keyword="HOSPITAL_INFO", reply="门诊时间 8:00-17:00", now=clock.now()
    )
    ts = now_ts(clock)
    async with front() as (client, s):
        scan = await post_event(
            client, s, event(OPENID, "SCAN", at=ts, EventKey="window-3", Ticket="T"), ts
        )
        assert decrypt_reply(s, scan.content, timestamp=ts)["Content"] == "已收到您的扫码。"
        click = await post_event(
            client, s, event(OPENID, "CLICK", at=ts + 1, EventKey="HOSPITAL_INFO"), ts
        )
        assert decrypt_reply(s, click.content, timestamp=ts)["Content"] == "门诊时间 8:00-17:00"
        view = await post_event(
            client, s, event(OPENID, "VIEW", at=ts + 2, EventKey="http://testserver/h5/booking"), ts
        )
        assert view.text == "success"
    user = (await db.execute(select(WeChatUser))).scalar_one()
    assert user.last_scene == "window-3"
    assert (await counts(db))[0] == 3


async def test_template_job_finish_records_delivery(
    front: Any, clock: FrozenClock, db: AsyncSession
) -> None:
    row = TemplateMessage(
        kind="report_ready",
        openid=OPENID,
        data={},
        client_msg_id="x1",
        state="sent",
        msgid=200163836,
        created_at=clock.now(),
    )
    failed = TemplateMessage(
        kind="report_ready",
        openid=OPENID,
        data={},
        client_msg_id="x2",
        state="sent",
        msgid=200163837,
        created_at=clock.now(),
    )
    db.add_all([row, failed])
    await db.flush()
    ts = now_ts(clock)
    async with front() as (client, s):
        ok = await post_event(
            client,
            s,
            event(OPENID, "TEMPLATESENDJOBFINISH", at=ts, MsgID=200163836, Status="success"),
            ts,
        )
        assert ok.text == "success"
        # Same sender and second, another message: not mistaken for a re-delivery.
        await post_event(
            client,
            s,
            event(
                OPENID, "TEMPLATESENDJOBFINISH", at=ts, MsgID=200163837, Status="failed:user block"
            ),
            ts,
        )
    await db.refresh(row)
    await db.refresh(failed)
    assert (row.state, row.delivery_status) == ("delivered", "success")
    assert (failed.state, failed.delivery_status) == ("failed", "failed:user block")


# ------------------------------------------------------------------ bad input


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1"
    "</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content><MsgId>1</MsgId></xml>"
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1"
    "</CreateTime><MsgType>text</MsgType><Content>&e;</Content><MsgId>2</MsgId></xml>"
)


def _good(clock: FrozenClock, s: Settings) -> tuple[dict[str, str], bytes]:
    ts = now_ts(clock)
    return safe_request(s, xml(text_message(OPENID, "hi", msg_id=9001, at=ts)), timestamp=ts)


@pytest.mark.parametrize(
    ("case", "mode", "status"),
    [
        ("wrong_signature", "safe", 403),
        ("missing_signature", "safe", 403),
        ("wrong_msg_signature", "safe", 403),
        ("stale_timestamp", "safe", 403),
        ("future_timestamp", "safe", 403),
        ("plaintext_in_safe_mode", "safe", 403),
        ("xxe_encrypted", "safe", 400),
        ("billion_laughs_plaintext", "plaintext", 400),
        ("truncated_plaintext", "plaintext", 400),
        ("non_utf8_plaintext", "plaintext", 400),
        ("garbled_ciphertext", "safe", 400),
        ("oversize", "safe", 413),
        ("missing_sender", "plaintext", 400),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    front: Any, clock: FrozenClock, db: AsyncSession, case: str, mode: str, status: int
) -> None:
    ts = now_ts(clock)
    async with front(mode) as (client, s):
        query, content = _good(clock, s)
        if case == "wrong_signature":
            query["signature"] = "f" * 40
        elif case == "missing_signature":
            del query["signature"]
        elif case == "wrong_msg_signature":
            query["msg_signature"] = "a" * 40
        elif case in {"stale_timestamp", "future_timestamp"}:
            delta = -301 if case == "stale_timestamp" else 301
            query, content = safe_request(
                s, xml(text_message(OPENID, "hi", msg_id=9002, at=ts)), timestamp=ts + delta
            )
        elif case == "plaintext_in_safe_mode":
            query, content = plain_request(
                s, xml(text_message(OPENID, "hi", msg_id=9003, at=ts)), timestamp=ts
            )
        elif case == "xxe_encrypted":
            query, content = safe_request(s, XXE, timestamp=ts)
        elif case == "billion_laughs_plaintext":
            query, content = plain_request(s, BILLION_LAUGHS, timestamp=ts)
        elif case == "truncated_plaintext":
            whole = xml(text_message(OPENID, "hi", msg_id=9004, at=ts))
            query, content = plain_request(s, whole[: len(whole) // 2], timestamp=ts)
        elif case == "non_utf8_plaintext":
            query, content = plain_request(
                s,
                xml(text_message(OPENID, "x", msg_id=9005, at=ts))
                .replace("x", "\udcff")
                .encode("utf-8", "surrogateescape"),
                timestamp=ts,
            )
        elif case == "garbled_ciphertext":
            content = content.replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[AAAA")
            query["msg_signature"] = sign(
                s.wechat_token.get_secret_value(),
                query["timestamp"],
                query["nonce"],
                xmltodict.parse(content)["xml"]["Encrypt"],
            )
        elif case == "oversize":
            content = b"<xml>" + b"x" * (s.wechat_callback_max_bytes + 1) + b"</xml>"
        elif case == "missing_sender":
            query, content = plain_request(
                s,
                "<xml><MsgType>text</MsgType><MsgId>1</MsgId><CreateTime>1</CreateTime></xml>",
                timestamp=ts,
            )
        response = await client.post("/wechat/callback", params=query, content=content)
    assert response.status_code == status, response.text
    assert await counts(db) == (0, 0, 0)


async def test_unknown_message_type_is_ignored_and_stores_nothing(
    front: Any, clock: FrozenClock, db: AsyncSession
) -> None:
    ts = now_ts(clock)
    async with front() as (client, s):
        for fields in (
            {
                "ToUserName": "gh",
                "FromUserName": OPENID,
                "CreateTime": ts,
                "MsgType": "hologram",
                "MsgId": 1,
            },
            event(OPENID, "teleport", at=ts),
        ):
            query, content = safe_request(s, xml(fields), timestamp=ts)
            response = await client.post("/wechat/callback", params=query, content=content)
            assert (response.status_code, response.text) == (200, "success")
    assert await counts(db) == (0, 0, 0)
