"""Rules of the message board, notification preferences, hospital pages and articles.

Keyword-only functions taking the session first; they flush at most (the route or job
commits). A patient reaches a thread only through their own openid (from the patient
scope); a thread of another account is "not found", like one that does not exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.accounts.schemas import PatientScope
from frontdesk.core import audit, outbox
from frontdesk.core.clock import get_clock
from frontdesk.his.port import Department, Doctor, HisGateway
from frontdesk.messaging import media
from frontdesk.messaging.errors import (
    AlreadyPushed,
    ArticleInvalid,
    ArticleNotFound,
    MessageInvalid,
    PageInvalid,
    RatingRefused,
    ThreadClosed,
    ThreadNotFound,
)
from frontdesk.messaging.models import (
    ARTICLE_DRAFT,
    ARTICLE_PUBLISHED,
    AUTHOR_PATIENT,
    AUTHOR_STAFF,
    THREAD_ANSWERED,
    THREAD_CLOSED,
    THREAD_WAITING,
    Article,
    BoardPost,
    BoardThread,
    HospitalPage,
    NotificationPreference,
    ReplyTemplate,
)
from frontdesk.messaging.sanitize import clean_html
from frontdesk.wechat.oa import templates as wechat_templates

MAX_BODY_CHARS = 1000
PUSH_JOB = "messaging.push_notice"


def _clean_text(text: str, *, max_chars: int = MAX_BODY_CHARS) -> str:
    """Plain text as typed, trimmed; refuses empty, too long, or control characters
    (NUL and friends break databases and logs; newlines and tabs are fine)."""
    text = text.strip()
    if not text or len(text) > max_chars:
        raise MessageInvalid(max_chars=max_chars)
    if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in text):
        raise MessageInvalid(max_chars=max_chars)
    return text


# --------------------------------------------------------------------------- patient side


async def start_thread(
    session: AsyncSession,
    *,
    scope: PatientScope,
    body: str,
    now: datetime,
    card_id: int | None = None,
    image: bytes | None = None,
    max_image_bytes: int,
) -> BoardThread:
    """A new message from the patient; ``card_id`` must be one of their own cards."""
    text = _clean_text(body)
    if card_id is not None:
        scope.card(card_id)  # not found unless bound to this account
    image_id = None
    if image:
        stored = await media.store_image(
            session,
            data=image,
            purpose="board",
            max_bytes=max_image_bytes,
            now=now,
            owner_openid=scope.openid,
        )
        image_id = stored.id
    thread = BoardThread(
        openid=scope.openid,
        card_id=card_id,
        subject=text.splitlines()[0][:60],
        source="h5",
        status=THREAD_WAITING,
        waiting_since_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(thread)
    await session.flush()
    session.add(
        BoardPost(
            thread_id=thread.id, author=AUTHOR_PATIENT, body=text, image_id=image_id, created_at=now
        )
    )
    await session.flush()
    return thread


async def own_thread(session: AsyncSession, *, openid: str, thread_id: int) -> BoardThread:
    thread = await session.get(BoardThread, thread_id)
    if thread is None or thread.openid != openid:
        raise ThreadNotFound
    return thread


async def add_patient_post(
    session: AsyncSession,
    *,
    openid: str,
    thread_id: int,
    body: str,
    now: datetime,
    image: bytes | None = None,
    max_image_bytes: int,
) -> BoardPost:
    """A follow-up in the patient's own open thread; it waits for staff again."""
    text = _clean_text(body)
    thread = await own_thread(session, openid=openid, thread_id=thread_id)
    if thread.status == THREAD_CLOSED:
        raise ThreadClosed
    image_id = None
    if image:
        stored = await media.store_image(
            session,
            data=image,
            purpose="board",
            max_bytes=max_image_bytes,
            now=now,
            owner_openid=openid,
        )
        image_id = stored.id
    post = BoardPost(
        thread_id=thread.id, author=AUTHOR_PATIENT, body=text, image_id=image_id, created_at=now
    )
    session.add(post)
    await _mark_waiting(session, thread.id, now)
    await session.flush()
    return post


async def _mark_waiting(session: AsyncSession, thread_id: int, now: datetime) -> None:
    # Keep the oldest unanswered time: a second message does not reset the clock.
    await session.execute(
        update(BoardThread)
        .where(BoardThread.id == thread_id, BoardThread.status != THREAD_CLOSED)
        .values(
            status=THREAD_WAITING,
            waiting_since_at=func.coalesce(BoardThread.waiting_since_at, now),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


async def threads_of(session: AsyncSession, *, openid: str) -> list[BoardThread]:
    rows = await session.execute(
        select(BoardThread)
        .where(BoardThread.openid == openid)
        .order_by(BoardThread.updated_at.desc(), BoardThread.id.desc())
        .limit(100)
    )
    return list(rows.scalars())


@dataclass(frozen=True)
class PostView:
    id: int
    author: str
    staff_actor: str | None
    body: str
    image_token: str | None
    created_at: datetime


async def posts_of(session: AsyncSession, *, thread_id: int) -> list[PostView]:
    posts = list(
        (
            await session.execute(
                select(BoardPost).where(BoardPost.thread_id == thread_id).order_by(BoardPost.id)
            )
        ).scalars()
    )
    tokens = await media.image_tokens(session, {p.image_id for p in posts if p.image_id})
    return [
        PostView(
            id=p.id,
            author=p.author,
            staff_actor=p.staff_actor,
            body=p.body,
            image_token=tokens.get(p.image_id) if p.image_id else None,
            created_at=p.created_at,
        )
        for p in posts
    ]


async def rate(
    session: AsyncSession, *, openid: str, thread_id: int, rating: int, now: datetime
) -> None:
    """The patient's satisfaction (1-5), once, and only after staff have replied."""
    if rating not in range(1, 6):
        raise RatingRefused
    thread = await own_thread(session, openid=openid, thread_id=thread_id)
    replied = (
        await session.execute(
            select(func.count())
            .select_from(BoardPost)
            .where(BoardPost.thread_id == thread.id, BoardPost.author == AUTHOR_STAFF)
        )
    ).scalar_one()
    if not replied:
        raise RatingRefused
    result = await session.execute(
        update(BoardThread)
        .where(BoardThread.id == thread.id, BoardThread.rating.is_(None))
        .values(rating=rating, rated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise RatingRefused


async def land_chat_text(
    session: AsyncSession, *, openid: str, msg_id: str, content: str, at: datetime
) -> BoardPost | None:
    """A chat text no keyword answered joins the account's latest open thread (or starts
    one). Once per MsgId: a second call for the same message does nothing."""
    seen = (
        await session.execute(select(BoardPost.id).where(BoardPost.chat_msg_id == msg_id))
    ).scalar_one_or_none()
    if seen is not None:
        return None
    text = content.strip()[:MAX_BODY_CHARS] or "…"
    text = "".join(ch for ch in text if ord(ch) >= 32 or ch in "\n\r\t")
    thread = (
        await session.execute(
            select(BoardThread)
            .where(BoardThread.openid == openid, BoardThread.status != THREAD_CLOSED)
            .order_by(BoardThread.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if thread is None:
        thread = BoardThread(
            openid=openid,
            subject=text.splitlines()[0][:60],
            source="chat",
            status=THREAD_WAITING,
            waiting_since_at=at,
            created_at=at,
            updated_at=at,
        )
        session.add(thread)
        await session.flush()
    else:
        await _mark_waiting(session, thread.id, at)
    post = BoardPost(
        thread_id=thread.id, author=AUTHOR_PATIENT, body=text, chat_msg_id=msg_id, created_at=at
    )
    session.add(post)
    await session.flush()
    return post


# --------------------------------------------------------------------------- staff side


@dataclass(frozen=True)
class InboxRow:
    thread: BoardThread
    waiting_minutes: int | None
    overdue: bool


async def inbox(
    session: AsyncSession, *, now: datetime, target_minutes: int, show_closed: bool = False
) -> list[InboxRow]:
    """Waiting threads first (oldest wait first), then answered, newest first."""
    stmt = select(BoardThread)
    if not show_closed:
        stmt = stmt.where(BoardThread.status != THREAD_CLOSED)
    threads = list((await session.execute(stmt.limit(500))).scalars())

    def order(t: BoardThread) -> tuple[int, float]:
        if t.status == THREAD_WAITING and t.waiting_since_at is not None:
            return (0, t.waiting_since_at.timestamp())
        return (1 if t.status == THREAD_ANSWERED else 2, -t.updated_at.timestamp())

    rows = []
    for t in sorted(threads, key=order):
        minutes = (
            int((now - t.waiting_since_at).total_seconds() // 60)
            if t.status == THREAD_WAITING and t.waiting_since_at
            else None
        )
        rows.append(InboxRow(t, minutes, minutes is not None and minutes >= target_minutes))
    return rows


async def overdue_count(session: AsyncSession, *, now: datetime, target_minutes: int) -> int:
    cutoff = now - timedelta(minutes=target_minutes)
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(BoardThread)
                .where(BoardThread.status == THREAD_WAITING, BoardThread.waiting_since_at <= cutoff)
            )
        ).scalar_one()
    )


async def waiting_count(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(BoardThread)
                .where(BoardThread.status == THREAD_WAITING)
            )
        ).scalar_one()
    )


async def staff_thread(session: AsyncSession, *, thread_id: int) -> BoardThread:
    thread = await session.get(BoardThread, thread_id)
    if thread is None:
        raise ThreadNotFound
    return thread


async def assign(
    session: AsyncSession, *, thread_id: int, to: str | None, staff_actor: str, now: datetime
) -> None:
    thread = await staff_thread(session, thread_id=thread_id)
    thread.assigned_to = (to or "").strip()[:64] or None
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="messaging.assign",
        record_type="board_thread",
        record_id=thread.id,
        detail={"to": thread.assigned_to},
    )
    await session.flush()


async def reply(
    session: AsyncSession,
    *,
    thread_id: int,
    body: str,
    staff_actor: str,
    now: datetime,
    thread_url: str,
) -> BoardPost:
    """Staff answer a thread: the reply is stored, the thread stops waiting, and a
    ``message_reply`` template message is queued in the same transaction."""
    text = _clean_text(body, max_chars=2000)
    thread = await staff_thread(session, thread_id=thread_id)
    if thread.status == THREAD_CLOSED:
        raise ThreadClosed
    post = BoardPost(
        thread_id=thread.id,
        author=AUTHOR_STAFF,
        staff_actor=staff_actor,
        body=text,
        created_at=now,
    )
    session.add(post)
    await session.flush()
    queued = await wechat_templates.queue_template(
        session,
        openid=thread.openid,
        kind="message_reply",
        data={
            "thing1": thread.subject[:20],
            "thing2": text[:20],
            # The hospital's local time, as patients read it.
            "time3": now.astimezone(get_clock().tz).strftime("%Y-%m-%d %H:%M"),
        },
        url=thread_url,
        now=now,
    )
    post.template_message_id = queued.id if queued else None
    thread.status = THREAD_ANSWERED
    thread.waiting_since_at = None
    thread.updated_at = now
    if thread.assigned_to is None:
        thread.assigned_to = staff_actor
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="messaging.reply",
        record_type="board_thread",
        record_id=thread.id,
        card_id=thread.card_id,
    )
    await session.flush()
    return post


async def close(session: AsyncSession, *, thread_id: int, staff_actor: str, now: datetime) -> None:
    thread = await staff_thread(session, thread_id=thread_id)
    if thread.status == THREAD_CLOSED:
        return
    thread.status, thread.closed_at, thread.updated_at = THREAD_CLOSED, now, now
    thread.waiting_since_at = None
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="messaging.close",
        record_type="board_thread",
        record_id=thread.id,
    )
    await session.flush()


async def reply_templates(session: AsyncSession) -> list[ReplyTemplate]:
    rows = await session.execute(select(ReplyTemplate).order_by(ReplyTemplate.title))
    return list(rows.scalars())


async def save_reply_template(
    session: AsyncSession, *, title: str, body: str, now: datetime
) -> ReplyTemplate:
    title = _clean_text(title, max_chars=64)
    text = _clean_text(body, max_chars=2000)
    row = (
        await session.execute(select(ReplyTemplate).where(ReplyTemplate.title == title))
    ).scalar_one_or_none()
    if row is None:
        row = ReplyTemplate(title=title, body=text, updated_at=now)
        session.add(row)
    else:
        row.body, row.updated_at = text, now
    await session.flush()
    return row


# --------------------------------------------------------------------------- preferences


async def wants(session: AsyncSession, *, openid: str, kind: str) -> bool:
    """Whether ``openid`` receives the optional ``kind`` (their choice, else the default)."""
    chosen = (
        await session.execute(
            select(NotificationPreference.enabled).where(
                NotificationPreference.openid == openid, NotificationPreference.kind == kind
            )
        )
    ).scalar_one_or_none()
    if chosen is None:
        return wechat_templates.OPTIONAL_KINDS.get(kind, True)
    return bool(chosen)


async def preferences(session: AsyncSession, *, openid: str) -> dict[str, bool]:
    return {
        kind: await wants(session, openid=openid, kind=kind)
        for kind in sorted(wechat_templates.OPTIONAL_KINDS)
    }


async def set_preferences(
    session: AsyncSession, *, openid: str, chosen: dict[str, bool], now: datetime
) -> None:
    for kind, enabled in chosen.items():
        if kind not in wechat_templates.OPTIONAL_KINDS:
            raise MessageInvalid(max_chars=0)
        row = (
            await session.execute(
                select(NotificationPreference).where(
                    NotificationPreference.openid == openid, NotificationPreference.kind == kind
                )
            )
        ).scalar_one_or_none()
        if row is None:
            session.add(
                NotificationPreference(openid=openid, kind=kind, enabled=enabled, updated_at=now)
            )
        else:
            row.enabled, row.updated_at = enabled, now
    await session.flush()


# --------------------------------------------------------------------------- hospital pages

PAGE_KEYS = ("intro", "address", "map_url", "transport", "hours", "floors", "phones")


async def hospital_pages(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(HospitalPage))
    stored = {row.key: row.body for row in rows.scalars()}
    return {key: stored.get(key, "") for key in PAGE_KEYS}


async def save_hospital_pages(
    session: AsyncSession, *, values: dict[str, str], staff_actor: str, now: datetime
) -> None:
    """Save the staff-edited blocks (plain text, shown escaped). The map link must be an
    https URL, so it cannot be a ``javascript:`` link."""
    for key, raw in values.items():
        if key not in PAGE_KEYS:
            raise PageInvalid(field=key)
        body = raw.strip()
        if len(body) > 5000 or any(ord(ch) < 32 and ch not in "\n\r\t" for ch in body):
            raise PageInvalid(field=key)
        if key == "map_url" and body:
            parts = urlsplit(body)
            if parts.scheme != "https" or not parts.netloc:
                raise PageInvalid(field=key)
    for key, raw in values.items():
        row = await session.get(HospitalPage, key)
        if row is None:
            session.add(
                HospitalPage(key=key, body=raw.strip(), updated_at=now, updated_by=staff_actor)
            )
        else:
            row.body, row.updated_at, row.updated_by = raw.strip(), now, staff_actor
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="messaging.hospital_pages",
        record_type="hospital_page",
        record_id=",".join(sorted(values)),
    )
    await session.flush()


class CatalogCache:
    """Departments and doctors from the HIS, kept ``ttl_seconds`` in this process.

    The catalog changes a few times a day; every page view asking the HIS would put the
    hospital's intranet under the patients' read storm. Stale for a few minutes is fine.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._items: dict[str, tuple[float, Any]] = {}

    async def _get(self, key: str, load: Any) -> Any:
        hit = self._items.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        value = await load()
        self._items[key] = (time.monotonic(), value)
        return value

    async def departments(self, his: HisGateway) -> list[Department]:
        result: list[Department] = await self._get("departments", his.departments)
        return result

    async def doctors(self, his: HisGateway, department_code: str) -> list[Doctor]:
        async def load() -> list[Doctor]:
            return await his.doctors(department_code=department_code)

        result: list[Doctor] = await self._get(f"doctors:{department_code}", load)
        return result


# --------------------------------------------------------------------------- articles

ARTICLE_KINDS = ("news", "notice")


async def save_article(
    session: AsyncSession,
    *,
    article_id: int | None,
    kind: str,
    title: str,
    summary: str,
    body_html: str,
    staff_actor: str,
    now: datetime,
) -> Article:
    """Create or edit an article; the body is sanitized here, before it is stored."""
    if kind not in ARTICLE_KINDS:
        raise ArticleInvalid(field="kind")
    title = title.strip()
    if not title or len(title) > 120:
        raise ArticleInvalid(field="title")
    if len(summary.strip()) > 200 or len(body_html) > 100_000:
        raise ArticleInvalid(field="body")
    body = clean_html(body_html)
    if article_id is None:
        article = Article(
            kind=kind,
            title=title,
            summary=summary.strip(),
            body_html=body,
            status=ARTICLE_DRAFT,
            created_at=now,
            updated_at=now,
            updated_by=staff_actor,
        )
        session.add(article)
    else:
        article = await staff_article(session, article_id=article_id)
        article.kind, article.title, article.summary, article.body_html = (
            kind,
            title,
            summary.strip(),
            body,
        )
        article.updated_at, article.updated_by = now, staff_actor
    await session.flush()
    return article


async def staff_article(session: AsyncSession, *, article_id: int) -> Article:
    article = await session.get(Article, article_id)
    if article is None:
        raise ArticleNotFound
    return article


async def published_article(session: AsyncSession, *, article_id: int) -> Article:
    article = await session.get(Article, article_id)
    if article is None or article.status != ARTICLE_PUBLISHED:
        raise ArticleNotFound
    return article


async def articles(session: AsyncSession, *, published_only: bool) -> list[Article]:
    stmt = select(Article).order_by(Article.id.desc()).limit(200)
    if published_only:
        stmt = select(Article).where(Article.status == ARTICLE_PUBLISHED)
        stmt = stmt.order_by(Article.published_at.desc(), Article.id.desc()).limit(200)
    return list((await session.execute(stmt)).scalars())


async def publish(
    session: AsyncSession, *, article_id: int, staff_actor: str, now: datetime
) -> Article:
    article = await staff_article(session, article_id=article_id)
    if article.status != ARTICLE_PUBLISHED:
        article.status, article.published_at = ARTICLE_PUBLISHED, now
        await audit.record(
            session,
            at=now,
            actor=staff_actor,
            action="messaging.publish",
            record_type="article",
            record_id=article.id,
        )
        await session.flush()
    return article


async def push_audience(session: AsyncSession) -> int:
    """How many accounts opted in to notices (those who unfollowed are skipped on send)."""
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(NotificationPreference)
                .where(
                    NotificationPreference.kind == "hospital_notice",
                    NotificationPreference.enabled.is_(True),
                )
            )
        ).scalar_one()
    )


async def start_push(
    session: AsyncSession, *, article_id: int, staff_actor: str, now: datetime
) -> None:
    """Push a published notice to followers who opted in, once: the guarded update makes
    a second click (or a second staff member) a refusal, and the push itself runs from the
    outbox in the same transaction."""
    article = await staff_article(session, article_id=article_id)
    if article.status != ARTICLE_PUBLISHED or article.kind != "notice":
        raise ArticleInvalid(field="status")
    result = await session.execute(
        update(Article)
        .where(Article.id == article.id, Article.pushed_at.is_(None))
        .values(pushed_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AlreadyPushed
    await outbox.enqueue(session, PUSH_JOB, article_id=article.id, dedupe_key=f"push:{article.id}")
    await audit.record(
        session,
        at=now,
        actor=staff_actor,
        action="messaging.push",
        record_type="article",
        record_id=article.id,
    )


async def push_notice(
    session: AsyncSession, *, article_id: int, now: datetime, per_minute: int, url: str
) -> int:
    """Queue the notice's template message to every opted-in account, spread at most
    ``per_minute`` a minute. Returns how many were queued; 0 if already done."""
    claimed = await session.execute(
        update(Article)
        .where(Article.id == article_id, Article.push_count == 0, Article.pushed_at.is_not(None))
        .values(push_count=-1)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return 0
    article = await staff_article(session, article_id=article_id)
    openids = list(
        (
            await session.execute(
                select(NotificationPreference.openid)
                .where(
                    NotificationPreference.kind == "hospital_notice",
                    NotificationPreference.enabled.is_(True),
                )
                .order_by(NotificationPreference.id)
            )
        ).scalars()
    )
    queued = 0
    for openid in openids:
        row = await wechat_templates.queue_template(
            session,
            openid=openid,
            kind="hospital_notice",
            data={"thing1": article.title[:20], "thing2": (article.summary or article.title)[:20]},
            url=url,
            now=now,
            run_after=now + timedelta(minutes=queued // per_minute),
        )
        queued += 1 if row is not None else 0
    await session.execute(
        update(Article)
        .where(Article.id == article_id)
        .values(push_count=queued)
        .execution_options(synchronize_session=False)
    )
    return queued
