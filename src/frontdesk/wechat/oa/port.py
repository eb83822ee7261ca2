"""The ``WeChatPlatform`` port: what the front server asks of the WeChat OA server APIs.

Values are frozen dataclasses in our words. Failures come in two families:

- ``WeChatUnavailable``: the platform is down, slow, busy (-1) or over quota: retry later.
- ``WeChatRejected``: WeChat understood and said no (bad code, unfollowed user, bad
  template...): terminal for this request. ``errcode`` is WeChat's number; which codes mean
  what is decided only in ``errors_map``.

The access token is an argument of each call: who holds and refreshes it is the job of
``tokens.TokenManager`` (one token shared by every process), not of the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class WeChatError(Exception):
    def __init__(self, errcode: int, errmsg: str = "", *, operation: str = "") -> None:
        super().__init__(f"{operation or 'wechat'}: errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.operation = operation


class WeChatUnavailable(WeChatError):
    """Retry later: network failure, timeout, 5xx, system busy, quota reached."""


class WeChatRejected(WeChatError):
    """Terminal for this request; ``token_invalid`` says a fresh access token may help."""

    @property
    def token_invalid(self) -> bool:
        from frontdesk.wechat.oa.errors_map import is_token_invalid

        return is_token_invalid(self.errcode)

    @property
    def user_unfollowed(self) -> bool:
        from frontdesk.wechat.oa.errors_map import is_unfollowed

        return is_unfollowed(self.errcode)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in_seconds: int


@dataclass(frozen=True)
class OAuthIdentity:
    """Who opened an H5 page (snsapi_base gives only the openid)."""

    openid: str
    scope: str
    unionid: str | None = None
    # 1 for a snapshot-page virtual user: never treat as a real patient.
    is_snapshot_user: bool = False


@dataclass(frozen=True)
class TemplateSent:
    msgid: int


@dataclass(frozen=True)
class UserInfo:
    openid: str
    subscribed: bool
    nickname: str = ""
    subscribed_at_unix: int | None = None
    unionid: str | None = None


@dataclass(frozen=True)
class JsTicket:
    ticket: str
    expires_in_seconds: int


@dataclass(frozen=True)
class TemplateRequest:
    openid: str
    template_id: str
    data: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    client_msg_id: str | None = None


class WeChatPlatform(Protocol):
    """The Official Account server API (``api.weixin.qq.com`` or the simulator)."""

    async def fetch_access_token(self) -> AccessToken:
        """A new global token from ``/cgi-bin/token`` (invalidates the previous one)."""
        ...

    async def fetch_stable_token(self, *, force_refresh: bool = False) -> AccessToken:
        """The stable token from ``/cgi-bin/stable_token`` (same token while valid)."""
        ...

    async def exchange_oauth_code(self, code: str) -> OAuthIdentity:
        """Exchange a single-use OAuth ``code`` for the user's openid."""
        ...

    async def send_template(self, access_token: str, request: TemplateRequest) -> TemplateSent:
        """Send a template message; its delivery result arrives later as an event."""
        ...

    async def create_menu(self, access_token: str, menu: dict[str, Any]) -> None: ...

    async def get_user_info(self, access_token: str, openid: str) -> UserInfo: ...

    async def get_js_ticket(self, access_token: str) -> JsTicket: ...
