"""Parse and render Official Account XML with a hardened parser (wechat.md §1.3, §1.4).

``defusedxml`` refuses DTDs, entity declarations and external references, which covers XXE
and "billion laughs"; the body must also be UTF-8. Text may or may not be CDATA-wrapped.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring


class XmlError(ValueError):
    """The body is not a well-formed, safe, UTF-8 WeChat XML message."""


def parse_message(body: bytes) -> dict[str, str]:
    """The top-level fields of ``<xml>...</xml>`` as strings (nested elements ignored)."""
    if not body.strip():
        raise XmlError("empty body")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlError("body is not UTF-8") from exc
    try:
        root: Element = fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise XmlError(f"forbidden XML construct: {type(exc).__name__}") from exc
    except ParseError as exc:
        raise XmlError(f"malformed XML: {exc}") from exc
    if root.tag != "xml":
        raise XmlError("root element is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if len(child) == 0:
            fields[child.tag] = (child.text or "").strip()
    return fields


def cdata(value: str) -> str:
    # "]]>" cannot appear inside CDATA: split it across two sections.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(*, to_user: str, from_user: str, create_time: int, content: str) -> str:
    """A passive text reply; the parties are swapped by the caller (to = the user)."""
    return (
        f"<xml><ToUserName>{cdata(to_user)}</ToUserName>"
        f"<FromUserName>{cdata(from_user)}</FromUserName>"
        f"<CreateTime>{int(create_time)}</CreateTime>"
        f"<MsgType>{cdata('text')}</MsgType>"
        f"<Content>{cdata(content)}</Content></xml>"
    )


def render_message(fields: dict[str, str | int]) -> str:
    """Render a flat message (the simulator's pushes); ints unwrapped, strings in CDATA."""
    parts = []
    for key, value in fields.items():
        inner = str(value) if isinstance(value, int) else cdata(value)
        parts.append(f"<{key}>{inner}</{key}>")
    return "<xml>" + "".join(parts) + "</xml>"
