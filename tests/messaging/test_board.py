"""The message board end to end: a phone signed in through the WeChat simulator leaves a
message, customer service answers in the console, the reply arrives as a template message
(sent to the simulator by the outbox worker) and in the thread; and every refusal."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from frontdesk.console.models import Role
from frontdesk.core.clock import FrozenClock
from frontdesk.core.worker import Worker
from frontdesk.messaging import jobs as _jobs  # noqa: F401 - registers the job handlers
from frontdesk.messaging import service
from frontdesk.messaging.models import BoardPost, BoardThread, StoredImage
from frontdesk.wechat.oa.models import TemplateMessage, WeChatTextMessage
from tests.console.conftest import csrf_from
from tests.messaging.helpers import console, count, csrf_of, phone, png

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any) -> Any:
    wechat_sim.container.services["his"] = his_gateway
    return wechat_sim


async def leave(client: Any, body: str, **files: Any) -> Any:
    page = await client.get("/h5/messages")
    return await client.post(
        "/h5/messages",
        data={"csrf": csrf_of(page), "body": body},
        files=files or {"photo": ("", b"", "application/octet-stream")},
    )


async def test_message_reply_template_and_rating(env: Any, clock: FrozenClock) -> None:
    patient, openid = await phone(env)
    sent = await leave(patient, "请问周六有皮肤科门诊吗？", photo=("rash.png", png(), "image/png"))
    assert sent.status_code == 303, sent.text
    thread_url = sent.headers["location"]
    thread_id = int(thread_url.rsplit("/", 1)[1])
    page = await patient.get(thread_url)
    assert "请问周六有皮肤科门诊吗？" in page.text and "待回复" in page.text
    [token] = await _image_tokens(env)
    photo = await patient.get(f"/h5/photos/{token}")
    assert photo.content == png()
    assert photo.headers["content-type"] == "image/png"
    assert photo.headers["content-security-policy"] == "default-src 'none'; sandbox"

    # Rating before any reply is refused.
    early = await patient.post(f"{thread_url}/rate", data={"csrf": csrf_of(page), "rating": "5"})
    assert early.status_code == 409

    # Customer service: unanswered first, with age; then the reply.
    clock.advance(minutes=7)
    staff, token_csrf, _ = await console(env, clock)
    inbox = await staff.get("/console/messages")
    assert f'data-thread="{thread_id}"' in inbox.text and "7 分钟" in inbox.text
    answered = await staff.post(
        f"/console/messages/{thread_id}/reply",
        data={"csrf_token": token_csrf, "body": "周六上午有皮肤科专家门诊。"},
    )
    assert answered.status_code == 303
    async with env.container.db.session() as s:
        thread = await s.get(BoardThread, thread_id)
        assert thread is not None
        assert (thread.status, thread.waiting_since_at) == ("answered", None)
        [tpl] = (await s.execute(select(TemplateMessage))).scalars().all()
        assert (tpl.kind, tpl.openid, tpl.state) == ("message_reply", openid, "queued")
        assert tpl.url == f"http://127.0.0.1:8000/h5/messages/{thread_id}"

    # The worker sends it: the phone's WeChat gets a template card.
    assert await Worker(env.container).drain() == 1
    [card] = env.sim.sent_templates
    assert (card["touser"], card["template_id"]) == (openid, "TPL_MESSAGE_REPLY")
    assert card["data"] == {
        "thing1": "请问周六有皮肤科门诊吗？",
        "thing2": "周六上午有皮肤科专家门诊。",
        "time3": "2026-11-27 09:07",  # 01:07 UTC, in Shanghai
    }

    page = await patient.get(thread_url)
    assert "周六上午有皮肤科专家门诊。" in page.text and "已回复" in page.text
    # The notification centre lists it with its link.
    centre = await patient.get("/h5/notifications")
    assert 'data-kind="message_reply"' in centre.text and f"/h5/messages/{thread_id}" in centre.text

    rated = await patient.post(f"{thread_url}/rate", data={"csrf": csrf_of(page), "rating": "4"})
    assert rated.status_code == 303
    again = await patient.post(f"{thread_url}/rate", data={"csrf": csrf_of(page), "rating": "1"})
    assert again.status_code == 409
    async with env.container.db.session() as s:
        thread = await s.get(BoardThread, thread_id)
        assert thread is not None and thread.rating == 4
    await patient.aclose()
    await staff.aclose()


async def _image_tokens(env: Any) -> list[str]:
    async with env.container.db.session() as s:
        return list((await s.execute(select(StoredImage.token))).scalars())


async def test_another_account_sees_no_thread_and_no_photo(env: Any, clock: FrozenClock) -> None:
    owner, _ = await phone(env, "张三")
    other, _ = await phone(env, "李四")
    sent = await leave(owner, "我的留言", photo=("a.png", png(), "image/png"))
    url = sent.headers["location"]
    [token] = await _image_tokens(env)
    assert (await other.get(url)).status_code == 404
    assert (await other.get(f"/h5/photos/{token}")).status_code == 404
    page = await other.get("/h5/messages")
    follow = await other.post(url, data={"csrf": csrf_of(page), "body": "插一句"},
                              files={"photo": ("", b"", "application/octet-stream")})  # fmt: skip
    assert follow.status_code == 404
    rated = await other.post(f"{url}/rate", data={"csrf": csrf_of(page), "rating": "1"})
    assert rated.status_code == 404
    # A card that is not bound to the account cannot be named on a message.
    foreign = await other.post(
        "/h5/messages",
        data={"csrf": csrf_of(page), "body": "关联别人的卡", "card_id": "1"},
        files={"photo": ("", b"", "application/octet-stream")},
    )
    assert foreign.status_code == 404
    assert await count(env, BoardPost) == 1
    assert await count(env, BoardThread) == 1
    await owner.aclose()
    await other.aclose()


@pytest.mark.parametrize(
    ("filename", "content", "ctype", "status"),
    [
        # HTML pretending to be a PNG by its name and its claimed type.
        ("x.png", b"<html><script>alert(1)</script></html>", "image/png", 422),
        # SVG can carry script: never accepted.
        ("x.svg", SVG, "image/svg+xml", 422),
        # PNG magic bytes followed by garbage.
        ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", 422),
        # A real PNG over the size limit (512 KB by default).
        ("big.png", png() + b"\x00" * (600 * 1024), "image/png", 413),
    ],
)  # fmt: skip
async def test_bad_uploads_are_refused_and_change_nothing(
    env: Any, filename: str, content: bytes, ctype: str, status: int
) -> None:
    patient, _ = await phone(env)
    refused = await leave(patient, "看看这张图", photo=(filename, content, ctype))
    assert refused.status_code == status
    assert await count(env, BoardThread) == 0
    assert await count(env, BoardPost) == 0
    assert await count(env, StoredImage) == 0
    await patient.aclose()


@pytest.mark.parametrize("body", ["", "   ", "x" * 1001, "含有\x00空字符"])
async def test_bad_message_text_is_refused(env: Any, body: str) -> None:
    patient, _ = await phone(env)
    refused = await leave(patient, body)
    assert refused.status_code == 422
    assert await count(env, BoardThread) == 0
    await patient.aclose()


async def test_flooding_is_refused_after_the_limit(env: Any) -> None:
    patient, _ = await phone(env)
    limit = env.container.settings.messaging_posts_per_10_minutes
    for n in range(limit):
        assert (await leave(patient, f"第{n}条")).status_code == 303
    flooded = await leave(patient, "再来一条")
    assert flooded.status_code == 429
    assert int(flooded.headers["retry-after"]) > 0
    assert await count(env, BoardThread) == limit
    await patient.aclose()


async def test_a_form_without_the_token_changes_nothing(env: Any) -> None:
    patient, _ = await phone(env)
    forged = await patient.post("/h5/messages", data={"csrf": "0" * 32, "body": "伪造"},
                                files={"photo": ("", b"", "application/octet-stream")})  # fmt: skip
    assert forged.status_code == 403
    assert await count(env, BoardThread) == 0
    await patient.aclose()


async def test_a_cashier_may_not_reply(env: Any, clock: FrozenClock) -> None:
    patient, _ = await phone(env)
    url = (await leave(patient, "你好")).headers["location"]
    thread_id = int(url.rsplit("/", 1)[1])
    cashier, token, _ = await console(env, clock, role=Role.cashier, username="cashier")
    refused = await cashier.post(
        f"/console/messages/{thread_id}/reply", data={"csrf_token": token, "body": "我来答"}
    )
    assert refused.status_code == 403
    assert (await cashier.get("/console/messages")).status_code == 403
    assert await count(env, BoardPost, BoardPost.author == "staff") == 0
    assert await count(env, TemplateMessage) == 0
    async with env.container.db.session() as s:
        thread = await s.get(BoardThread, thread_id)
        assert thread is not None and thread.status == "waiting"
    await patient.aclose()
    await cashier.aclose()


async def test_overdue_alert_saved_replies_assign_and_close(env: Any, clock: FrozenClock) -> None:
    patient, _ = await phone(env)
    url = (await leave(patient, "药房几点关门？")).headers["location"]
    thread_id = int(url.rsplit("/", 1)[1])
    staff, token, _ = await console(env, clock)
    inbox = await staff.get("/console/messages")
    assert 'data-testid="overdue-alert"' not in inbox.text
    clock.advance(minutes=env.container.settings.messaging_reply_target_minutes + 1)
    await staff.aclose()  # its session went idle; a colleague signs in
    staff, token, _ = await console(env, clock, username="kefu2")
    inbox = await staff.get("/console/messages")
    assert 'data-testid="overdue-alert"' in inbox.text and 'class="overdue"' in inbox.text
    home = await staff.get("/console/")
    assert "有留言超时未回复" in home.text

    saved = await staff.post(
        "/console/reply-templates",
        data={"csrf_token": token, "title": "药房时间", "body": "药房 7:30 至 17:30 开放。"},
    )
    assert saved.status_code == 303
    page = await staff.get(f"/console/messages/{thread_id}")
    template_id = page.text.split("?template=")[1].split('"')[0]
    prefilled = await staff.get(f"/console/messages/{thread_id}?template={template_id}")
    assert ">药房 7:30 至 17:30 开放。</textarea>" in prefilled.text

    await staff.post(
        f"/console/messages/{thread_id}/assign", data={"csrf_token": token, "to": "wang"}
    )
    closed = await staff.post(
        f"/console/messages/{thread_id}/close", data={"csrf_token": csrf_from(page.text)}
    )
    assert closed.status_code == 303
    async with env.container.db.session() as s:
        thread = await s.get(BoardThread, thread_id)
        assert thread is not None
        assert (thread.assigned_to, thread.status) == ("wang", "closed")
    # A closed thread takes no more replies or follow-ups, and leaves the inbox.
    late = await staff.post(
        f"/console/messages/{thread_id}/reply", data={"csrf_token": token, "body": "晚了"}
    )
    assert late.status_code == 409
    assert "已结束" in (await patient.get(url)).text
    ppage = await patient.get("/h5/messages")
    follow = await patient.post(url, data={"csrf": csrf_of(ppage), "body": "还有问题"},
                                files={"photo": ("", b"", "application/octet-stream")})  # fmt: skip
    assert follow.status_code == 409
    assert f'data-thread="{thread_id}"' not in (await staff.get("/console/messages")).text
    assert await count(env, BoardPost) == 1
    await patient.aclose()
    await staff.aclose()


async def test_chat_text_that_is_no_keyword_lands_on_the_board(
    env: Any, clock: FrozenClock
) -> None:
    async with env.container.db.session() as s:
        from frontdesk.wechat.oa.service import save_keyword_reply

        await save_keyword_reply(s, keyword="地址", reply="中山路 1 号", now=clock.now())
    user = env.sim.add_user("王五")
    await env.sim.user_follows(user.openid)
    await env.sim.user_sends_text(user.openid, "地址")
    await env.sim.user_sends_text(user.openid, "我想咨询一下体检套餐")
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        [thread] = (await s.execute(select(BoardThread))).scalars().all()
        posts = (await s.execute(select(BoardPost.body))).scalars().all()
    assert (thread.openid, thread.source, thread.status) == (user.openid, "chat", "waiting")
    assert posts == ["我想咨询一下体检套餐"]
    # The same chat message handled again (a lease that expired): still one post.
    async with env.container.db.session() as s:
        stored = (
            await s.execute(
                select(WeChatTextMessage).where(WeChatTextMessage.board_state == "board")
            )
        ).scalar_one()
        again = await service.land_chat_text(
            s, openid=stored.openid, msg_id=stored.msg_id, content=stored.content, at=clock.now()
        )
    assert again is None
    assert await count(env, BoardPost) == 1
