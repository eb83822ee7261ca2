"""Rules below the pages: image sniffing, and a notice pushed once under concurrent clicks."""

from __future__ import annotations

import asyncio
import struct

import pytest
from sqlalchemy import func, select

from frontdesk.core.clock import FrozenClock
from frontdesk.core.database import Database
from frontdesk.core.outbox import OutboxJob
from frontdesk.messaging import service
from frontdesk.messaging.errors import AlreadyPushed
from frontdesk.messaging.media import sniff_image
from tests.messaging.helpers import png

GIF = b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + b"\x00" * 6 + b"\x3b"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9"
WEBP_BODY = b"WEBPVP8 " + b"\x00" * 22
WEBP = b"RIFF" + struct.pack("<I", len(WEBP_BODY)) + WEBP_BODY


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(), "image/png"),
        (GIF, "image/gif"),
        (JPEG, "image/jpeg"),
        (WEBP, "image/webp"),
        (png()[:20], None),  # cut off before the size
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4 + b"IHDR" + b"\x00" * 17, None),  # 0 x 0
        (JPEG[:-2] + b"\x00\x00", None),  # no end-of-image marker
        (b"RIFF" + struct.pack("<I", 999) + WEBP_BODY, None),  # length lies
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"", None),
    ],
)
def test_images_are_recognised_by_their_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_image(data) == expected


async def test_two_staff_pushing_at_once_push_once(committed: Database, clock: FrozenClock) -> None:
    async with committed.session() as s:
        article = await service.save_article(
            s,
            article_id=None,
            kind="notice",
            title="停水通知",
            summary="",
            body_html="<p>周六停水</p>",
            staff_actor="staff:1",
            now=clock.now(),
        )
        await service.publish(s, article_id=article.id, staff_actor="staff:1", now=clock.now())

    async def click(actor: str) -> str:
        try:
            async with committed.session() as s:
                await service.start_push(
                    s, article_id=article.id, staff_actor=actor, now=clock.now()
                )
        except AlreadyPushed:
            return "refused"
        return "pushed"

    outcomes = await asyncio.gather(click("staff:1"), click("staff:2"))
    assert sorted(outcomes) == ["pushed", "refused"]
    async with committed.session() as s:
        jobs = (
            await s.execute(
                select(func.count())
                .select_from(OutboxJob)
                .where(OutboxJob.name == service.PUSH_JOB)
            )
        ).scalar_one()
    assert jobs == 1
