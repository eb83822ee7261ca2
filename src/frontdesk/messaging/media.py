"""Uploaded images: accepted by what the bytes are, never by the file's name or the
browser's claimed type.

We accept JPEG, PNG, GIF and WebP only (no SVG: it can carry script). The stored type is the
one the bytes prove; pages serve it with that type, ``nosniff``, and a sandboxing CSP, so a
file that is also valid HTML or script is never run as such.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from frontdesk.messaging.errors import ImageRejected, ImageTooLarge
from frontdesk.messaging.models import StoredImage

MAX_DIMENSION = 10_000


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes are (``image/png`` ...), or None. Checks the signature and
    that the header says a sane size, so a file that merely starts with the magic bytes and
    is otherwise something else is refused."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 33 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "image/png" if 0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 14:
        width, height = struct.unpack("<HH", data[6:10])
        return (
            "image/gif" if width > 0 and height > 0 and data.rstrip(b"\0").endswith(b";") else None
        )
    if data.startswith(b"\xff\xd8\xff") and len(data) >= 128:
        # A JPEG ends with the end-of-image marker (some cameras pad after it).
        return "image/jpeg" if b"\xff\xd9" in data[-1024:] else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        declared = struct.unpack("<I", data[4:8])[0]
        return "image/webp" if declared + 8 == len(data) else None
    return None


async def store_image(
    session: AsyncSession,
    *,
    data: bytes,
    purpose: str,
    max_bytes: int,
    now: datetime,
    owner_openid: str | None = None,
) -> StoredImage:
    """Check and keep one uploaded image. Refuses oversized or non-image content."""
    if len(data) > max_bytes:
        raise ImageTooLarge(max_kb=max_bytes // 1024)
    content_type = sniff_image(data)
    if content_type is None:
        raise ImageRejected
    image = StoredImage(
        token=secrets.token_urlsafe(24),
        purpose=purpose,
        owner_openid=owner_openid,
        content_type=content_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        created_at=now,
    )
    session.add(image)
    await session.flush()
    return image


async def image_by_token(session: AsyncSession, token: str) -> StoredImage | None:
    if not token or len(token) > 48:
        return None
    return (
        await session.execute(select(StoredImage).where(StoredImage.token == token))
    ).scalar_one_or_none()


async def image_tokens(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(StoredImage.id, StoredImage.token).where(StoredImage.id.in_(ids))
    )
    return {row.id: row.token for row in rows}
