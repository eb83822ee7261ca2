"""Rich text of news and notices, cleaned on save with an allowlist (``nh3``, Ammonia).

Only simple formatting survives; every script, event handler, style, iframe and
``javascript:`` URL is removed. Images may only point at our own ``/media/`` URLs, so an
article cannot make phones fetch from elsewhere.
"""

from __future__ import annotations

import nh3

TAGS = {
    "p", "br", "strong", "em", "b", "i", "u", "h2", "h3", "h4",
    "ul", "ol", "li", "blockquote", "a", "img", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt"}, "td": {"colspan"}, "th": {"colspan"}}
MEDIA_PREFIX = "/media/"


def _filter(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src":
        return value if value.startswith(MEDIA_PREFIX) and ".." not in value else None
    return value


def clean_html(html: str) -> str:
    """The allowlisted subset of ``html``; links get ``rel="noopener noreferrer"``."""
    return nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        url_schemes={"https", "http", "tel"},
        link_rel="noopener noreferrer",
        attribute_filter=_filter,
        strip_comments=True,
    )
