"""Refusals of the messaging area, each with a stable code (words in the locale catalogs)."""

from __future__ import annotations

from frontdesk.core.errors import Conflict, Invalid, NotFound


class MessageInvalid(Invalid):
    code = "message_invalid"


class ImageRejected(Invalid):
    """Not an image we accept (checked by content), or too large."""

    code = "image_rejected"


class ImageTooLarge(Invalid):
    code = "image_too_large"
    status = 413


class ThreadNotFound(NotFound):
    code = "thread_not_found"


class ThreadClosed(Conflict):
    code = "thread_closed"


class RatingRefused(Conflict):
    """A rating before any staff reply, or a second rating."""

    code = "rating_refused"


class ArticleInvalid(Invalid):
    code = "article_invalid"


class ArticleNotFound(NotFound):
    code = "article_not_found"


class AlreadyPushed(Conflict):
    code = "article_already_pushed"


class PageInvalid(Invalid):
    code = "hospital_page_invalid"
