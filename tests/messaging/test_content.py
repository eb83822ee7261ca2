"""Hospital pages, news and notices (sanitized on save, images served by us, pushed to
followers who opted in, once), notification preferences, keyword replies, the menu and the
delivery view with retry."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from frontdesk.core.clock import FrozenClock
from frontdesk.core.outbox import OutboxJob
from frontdesk.core.worker import Worker
from frontdesk.messaging import jobs as _jobs  # noqa: F401 - registers the job handlers
from frontdesk.messaging.models import Article, HospitalPage, StoredImage
from frontdesk.sims.his_sim.app import sim_state
from frontdesk.wechat.oa.models import AccountMenu, KeywordReply, TemplateMessage
from frontdesk.wechat.oa.templates import queue_template
from tests.messaging.helpers import console, count, csrf_of, phone, png

HOSTILE = (
    '<p onclick="steal()">开诊<script>document.title="pwned"</script></p>'
    '<img src="x" onerror="document.title=\'pwned\'">'
    "<a href=\"javascript:document.title='pwned'\">link</a>"
    '<iframe src="https://evil.example"></iframe><style>body{display:none}</style>'
    "<h2>门诊时间</h2><ul><li>周一至周五</li></ul>"
)
CLEAN = (
    "<p>开诊</p><img>"
    '<a rel="noopener noreferrer">link</a>'
    "<h2>门诊时间</h2><ul><li>周一至周五</li></ul>"
)


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any) -> Any:
    wechat_sim.container.services["his"] = his_gateway
    return wechat_sim


async def create_article(staff: Any, token: str, *, kind: str = "notice", body: str) -> int:
    saved = await staff.post(
        "/console/articles",
        data={"csrf_token": token, "kind": kind, "title": "春节门诊安排", "summary": "春节",
              "body_html": body},
    )  # fmt: skip
    assert saved.status_code == 303, saved.text
    return int(saved.headers["location"].rsplit("/", 1)[1])


async def test_articles_are_sanitized_on_save_and_shown_clean(env: Any, clock: FrozenClock) -> None:
    staff, token, _ = await console(env, clock)
    article_id = await create_article(staff, token, body=HOSTILE)
    async with env.container.db.session() as s:
        stored = await s.get(Article, article_id)
        assert stored is not None and stored.body_html == CLEAN
    preview = await staff.get(f"/console/articles/{article_id}")
    assert CLEAN in preview.text and "<script>document" not in preview.text
    # Drafts are not shown to patients.
    patient, _ = await phone(env)
    assert (await patient.get(f"/h5/news/{article_id}")).status_code == 404
    await staff.post(f"/console/articles/{article_id}/publish", data={"csrf_token": token})
    page = await patient.get(f"/h5/news/{article_id}")
    assert page.status_code == 200 and CLEAN in page.text and "onerror" not in page.text
    assert "春节门诊安排" in (await patient.get("/h5/news")).text
    await patient.aclose()
    await staff.aclose()


async def test_article_images_are_checked_and_served_safely(env: Any, clock: FrozenClock) -> None:
    staff, token, _ = await console(env, clock)
    article_id = await create_article(staff, token, kind="news", body="<p>新大楼</p>")
    fake = await staff.post(
        f"/console/articles/{article_id}/images",
        data={"csrf_token": token},
        files={"image": ("a.jpg", b"<script>alert(1)</script>", "image/jpeg")},
    )
    assert fake.status_code == 422
    assert await count(env, StoredImage) == 0
    ok = await staff.post(
        f"/console/articles/{article_id}/images",
        data={"csrf_token": token},
        files={"image": ("building.png", png(4, 3), "image/png")},
    )
    assert ok.status_code == 303
    page = await staff.get(ok.headers["location"])
    found = re.search(r"/media/([A-Za-z0-9_-]+)", page.text)
    assert found is not None
    served = await staff.get(found.group(0))
    assert served.content == png(4, 3)
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "default-src 'none'; sandbox"
    # Only our own media may be an article image; the link survives the sanitizer.
    body = f'<p>新大楼</p><img src="{found.group(0)}" alt="大楼"><img src="https://evil.example/t.gif">'
    saved = await staff.post(
        f"/console/articles/{article_id}",
        data={"csrf_token": token, "kind": "news", "title": "新大楼启用", "body_html": body},
    )
    assert saved.status_code == 303
    async with env.container.db.session() as s:
        stored = await s.get(Article, article_id)
        assert stored is not None
        assert stored.body_html == f'<p>新大楼</p><img src="{found.group(0)}" alt="大楼"><img>'
    await staff.aclose()


async def test_notice_push_reaches_only_opted_in_followers_once(
    env: Any, clock: FrozenClock
) -> None:
    yes, yes_openid = await phone(env, "订阅者")
    no, _ = await phone(env, "未订阅")
    gone, gone_openid = await phone(env, "已取关")
    for client in (yes, gone):
        page = await client.get("/h5/notifications")
        assert 'name="hospital_notice" value="1" checked' not in page.text  # opt-in: off
        saved = await client.post(
            "/h5/notifications/preferences",
            data={"csrf": csrf_of(page), "hospital_notice": "1", "visit_reminder": "1"},
        )
        assert saved.status_code == 303
    await env.sim.user_unfollows(gone_openid)

    staff, token, _ = await console(env, clock)
    article_id = await create_article(staff, token, body="<p>春节期间门诊照常</p>")
    # Not published yet: no push.
    early = await staff.post(
        f"/console/articles/{article_id}/push", data={"csrf_token": token, "confirm_count": "2"}
    )
    assert early.status_code == 409
    await staff.post(f"/console/articles/{article_id}/publish", data={"csrf_token": token})
    confirm = await staff.get(f"/console/articles/{article_id}/push")
    assert "将推送给 2 位" in confirm.text
    # A stale count (the audience changed since the page was shown) is refused.
    stale = await staff.post(
        f"/console/articles/{article_id}/push", data={"csrf_token": token, "confirm_count": "7"}
    )
    assert stale.status_code == 409
    assert await count(env, OutboxJob, OutboxJob.name == "messaging.push_notice") == 0
    pushed = await staff.post(
        f"/console/articles/{article_id}/push", data={"csrf_token": token, "confirm_count": "2"}
    )
    assert pushed.status_code == 303
    twice = await staff.post(
        f"/console/articles/{article_id}/push", data={"csrf_token": token, "confirm_count": "2"}
    )
    assert twice.status_code == 409
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        rows = (await s.execute(select(TemplateMessage))).scalars().all()
        article = await s.get(Article, article_id)
    assert [(r.kind, r.openid) for r in rows] == [("hospital_notice", yes_openid)]
    assert article is not None and article.push_count == 1
    assert [t["touser"] for t in env.sim.sent_templates] == [yes_openid]
    centre = await yes.get("/h5/notifications")
    assert 'data-kind="hospital_notice"' in centre.text
    assert 'data-kind="hospital_notice"' not in (await no.get("/h5/notifications")).text
    for client in (yes, no, gone, staff):
        await client.aclose()


async def test_a_reminder_turned_off_is_not_sent(env: Any) -> None:
    patient, openid = await phone(env)
    page = await patient.get("/h5/notifications")
    assert 'name="visit_reminder" value="1" checked' in page.text  # on by default
    await patient.post("/h5/notifications/preferences", data={"csrf": csrf_of(page)})
    async with env.container.db.session() as s:
        skipped = await queue_template(
            s, openid=openid, kind="visit_reminder", data={"thing1": "明天 9:00 内科"}
        )
        kept = await queue_template(
            s, openid=openid, kind="report_ready", data={"thing1": "血常规"}
        )
    assert skipped is None and kept is not None
    assert await count(env, TemplateMessage) == 1
    await patient.aclose()


async def test_hospital_pages_and_the_catalog_from_the_his(
    env: Any, clock: FrozenClock, his_sim: Any
) -> None:
    staff, token, _ = await console(env, clock)
    bad = await staff.post(
        "/console/hospital",
        data={"csrf_token": token, "intro": "改了", "map_url": "javascript:alert(1)"},
    )
    assert bad.status_code == 422
    assert await count(env, HospitalPage) == 0
    saved = await staff.post(
        "/console/hospital",
        data={
            "csrf_token": token,
            "intro": "三级甲等综合医院<script>x</script>",
            "address": "中山路 1 号",
            "map_url": "https://map.example/?q=hospital",
            "hours": "周一至周日 8:00-17:00",
            "phones": "总机 025-00000000",
        },
    )
    assert saved.status_code == 303
    patient, _ = await phone(env)
    page = await patient.get("/h5/hospital")
    assert "三级甲等综合医院&lt;script&gt;x&lt;/script&gt;" in page.text
    assert 'href="https://map.example/?q=hospital"' in page.text
    assert "025-00000000" in page.text
    departments = await patient.get("/h5/hospital/departments")
    assert departments.status_code == 200
    codes = re.findall(r'/h5/hospital/departments/([^"]+)"', departments.text)
    assert codes
    doctors = await env.container.services["his"].doctors(department_code=codes[0])
    page = await patient.get(f"/h5/hospital/departments/{codes[0]}")
    assert page.status_code == 200
    for doctor in doctors:
        assert f'id="doctor-{doctor.code}"' in page.text
    assert (await patient.get("/h5/hospital/departments/NOPE")).status_code == 404
    await patient.aclose()
    await staff.aclose()


async def test_keywords_menu_and_delivery_retry(env: Any, clock: FrozenClock) -> None:
    staff, token, _ = await console(env, clock)
    saved = await staff.post(
        "/console/wechat/keywords",
        data={"csrf_token": token, "keyword": "停车", "reply": "地下停车场 B1", "match": "contains",
              "enabled": "1", "priority": "10"},
    )  # fmt: skip
    assert saved.status_code == 303
    async with env.container.db.session() as s:
        [kw] = (await s.execute(select(KeywordReply))).scalars().all()
    assert (kw.keyword, kw.match, kw.reply) == ("停车", "contains", "地下停车场 B1")
    user = env.sim.add_user("赵六")
    await env.sim.user_follows(user.openid)
    await env.sim.user_sends_text(user.openid, "请问哪里停车")
    assert env.sim.chat(user.openid)[-1].text == "地下停车场 B1"

    bad = await staff.post(
        "/console/wechat/menu",
        data={"csrf_token": token, "menu_json": '{"button": [{"name": "x", "type": "bogus"}]}'},
    )
    assert bad.status_code == 422
    assert await count(env, AccountMenu) == 0
    menu = (
        '{"button": [{"type": "view", "name": "留言", "url": "{base}/h5/messages"},'
        ' {"type": "click", "name": "医院", "key": "HOSPITAL_INFO"}]}'
    )
    pushed = await staff.post(
        "/console/wechat/menu", data={"csrf_token": token, "menu_json": menu, "push": "1"}
    )
    assert pushed.headers["location"] == "/console/wechat/menu?notice=pushed"
    assert env.sim.menu == {
        "button": [
            {"type": "view", "name": "留言", "url": "http://127.0.0.1:8000/h5/messages"},
            {"type": "click", "name": "医院", "key": "HOSPITAL_INFO"},
        ]
    }

    # A template message WeChat refused (40037: bad template id) is listed
    # with why, and a retry sends it.
    blocked = env.sim.add_user("孙七")
    await env.sim.user_follows(blocked.openid)
    env.sim.inject("template", 40037)
    async with env.container.db.session() as s:
        row = await queue_template(
            s, openid=blocked.openid, kind="report_ready", data={"thing1": "血常规"}
        )
        assert row is not None
        row_id = row.id
    await Worker(env.container).drain()
    view = await staff.get("/console/wechat/deliveries?state=failed")
    assert f'data-id="{row_id}"' in view.text and "40037" in view.text
    retried = await staff.post(
        f"/console/wechat/deliveries/{row_id}/retry", data={"csrf_token": token}
    )
    assert retried.status_code == 303
    again = await staff.post(
        f"/console/wechat/deliveries/{row_id}/retry", data={"csrf_token": token}
    )
    assert again.status_code == 303
    await Worker(env.container).drain()
    async with env.container.db.session() as s:
        done = await s.get(TemplateMessage, row_id)
    assert done is not None
    assert (done.state, done.client_msg_id) == ("sent", f"fd-tpl-{row_id}-r1")
    assert [t["touser"] for t in env.sim.sent_templates] == [blocked.openid]
    await staff.aclose()


async def test_catalog_is_cached_and_an_outage_is_a_clear_503(env: Any, his_sim: Any) -> None:
    patient, _ = await phone(env)
    faults = sim_state(his_sim).faults
    faults.mode, faults.count, faults.path_contains = "error", None, "/departments"
    down = await patient.get("/h5/hospital/departments")
    assert down.status_code == 503
    faults.mode = None
    up = await patient.get("/h5/hospital/departments")
    assert up.status_code == 200
    # Within the cache time the page does not ask the HIS again, even if it is down.
    faults.mode = "error"
    cached = await patient.get("/h5/hospital/departments")
    assert cached.status_code == 200 and cached.text == up.text
    faults.mode = None
    await patient.aclose()
