"""The simulated WeChat Official Account platform (wechat.md §1.7, §2, §3, §6).

A real HTTP counterpart of ``wechat.oa.client``: the same paths, parameters, JSON shapes and
errcodes as ``api.weixin.qq.com``, plus the OAuth consent page and the callback pushes to the
front server (signed, and encrypted in compatible/safe mode). State is in memory, per app.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from frontdesk.wechat.oa.crypto import (
    CryptoError,
    MessageCrypto,
    check_msg_signature,
    jssdk_signature,
    msg_signature,
    url_signature,
)
from frontdesk.wechat.oa.xmlmsg import XmlError, parse_message, render_message

log = logging.getLogger("frontdesk.sims.wechat")

TOKEN_OVERLAP_SECONDS = 300
TOKEN_LIFE_SECONDS = 7200
CODE_LIFE_SECONDS = 300
FORCE_REFRESH_MIN_GAP_SECONDS = 30
FORCE_REFRESH_PER_DAY = 20
KEYWORD_MAX_CHARS = 20
SERVICE_UNAVAILABLE = "该公众号暂时无法提供服务，请稍后再试"
REPLY_TYPES = {"text", "image", "voice", "video", "music", "news", "transfer_customer_service"}

DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "TPL_BOOKING_MADE": ["thing1", "time2", "thing3", "character_string4"],
    "TPL_BOOKING_CANCELLED": ["thing1", "time2", "thing3"],
    "TPL_VISIT_REMINDER": ["thing1", "time2", "thing3"],
    "TPL_CLINIC_SUSPENDED": ["thing1", "time2", "thing3"],
    "TPL_PAYMENT_DUE": ["thing1", "amount2", "time3"],
    "TPL_PAYMENT_RECEIVED": ["thing1", "amount2", "time3"],
    "TPL_REFUND_MADE": ["thing1", "amount2", "time3"],
    "TPL_REPORT_READY": ["thing1", "thing2", "time3"],
    "TPL_MESSAGE_REPLY": ["thing1", "thing2", "time3"],
}


@dataclass
class SimConfig:
    appid: str = "wx0000000000sim001"
    appsecret: str = "sim-appsecret-change-me"
    token: str = "simtoken"  # noqa: S105 - the simulator's well-known test token
    encoding_aes_key: str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    original_id: str = "gh_0000simhosp"
    # The front server's callback and its public base (for the phone's H5 pages).
    callback_url: str = "http://127.0.0.1:8000/wechat/callback"
    front_base_url: str = "http://127.0.0.1:8000"
    callback_mode: str = "safe"  # plaintext | compatible | safe
    callback_timeout_seconds: float = 5.0
    callback_deliveries: int = 3  # "总共重试三次": three deliveries in total (configurable)
    # Hosts allowed as OAuth redirect_uri ("网页授权域名"); empty means any.
    oauth_redirect_hosts: list[str] = field(default_factory=list)
    templates: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    # Push TEMPLATESENDJOBFINISH by itself (a running server); tests call flush_events().
    auto_deliver_events: bool = False
    # The SMS simulator, whose inbox the phone page shows (binding codes); None hides it.
    sms_inbox_base: str | None = None


@dataclass
class VirtualUser:
    openid: str
    nickname: str
    following: bool = False
    followed_at: int | None = None
    blocks_templates: bool = False


@dataclass
class ChatEntry:
    openid: str
    sender: str  # "user" | "account" | "system"
    kind: str  # "text" | "card" | "notice" | "event"
    text: str
    at: float
    card: dict[str, Any] | None = None


@dataclass
class Delivery:
    """The outcome of pushing one message to the front server."""

    attempts: int
    ok: bool
    reply: dict[str, str] | None
    outcome: str  # "reply" | "no_reply" | SERVICE_UNAVAILABLE text
    statuses: list[str] = field(default_factory=list)


class SimPlatform:
    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        callback_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SimConfig()
        self.clock = clock
        self.crypto = MessageCrypto(
            token=self.config.token,
            encoding_aes_key=self.config.encoding_aes_key,
            appid=self.config.appid,
        )
        self.users: dict[str, VirtualUser] = {}
        self.tokens: dict[str, float] = {}  # /cgi-bin/token tokens → expiry
        self.stable_tokens: dict[str, float] = {}  # /cgi-bin/stable_token tokens → expiry
        self.current_stable: str | None = None
        self.force_refresh_at: list[float] = []
        self.token_requests = 0
        self.stable_token_requests = 0
        self.codes: dict[str, tuple[str, float, bool]] = {}  # code → (openid, issued, used)
        self.ticket: tuple[str, float] | None = None
        self.ticket_requests = 0
        self.menu: dict[str, Any] | None = None
        self.sent_templates: list[dict[str, Any]] = []
        self._client_msg_ids: dict[tuple[str, str], tuple[int, float]] = {}
        self._next_msgid = 200_000_000
        self.pending_events: list[dict[str, str | int]] = []
        self.chats: dict[str, list[ChatEntry]] = {}
        self.deliveries: list[Delivery] = []
        self.injected: dict[str, list[int]] = {}
        self._callback = httpx.AsyncClient(
            transport=callback_transport,
            timeout=httpx.Timeout(self.config.callback_timeout_seconds),
        )
        self._background: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        await self._callback.aclose()

    # ------------------------------------------------------------------ users and faults

    def add_user(
        self, nickname: str, *, openid: str | None = None, following: bool = False
    ) -> VirtualUser:
        openid = openid or "o" + secrets.token_urlsafe(21)[:27]
        user = VirtualUser(
            openid=openid,
            nickname=nickname,
            following=following,
            followed_at=int(self.clock()) if following else None,
        )
        self.users[openid] = user
        return user

    def inject(self, operation: str, errcode: int, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` answer ``errcode``."""
        self.injected.setdefault(operation, []).extend([errcode] * times)

    def _injected(self, operation: str) -> int | None:
        queue = self.injected.get(operation)
        return queue.pop(0) if queue else None

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)
        self.stable_tokens.pop(token, None)

    def expire_token(self, token: str) -> None:
        now = self.clock()
        for table in (self.tokens, self.stable_tokens):
            if token in table:
                table[token] = now - 1

    def token_error(self, access_token: str | None) -> tuple[int, str] | None:
        if not access_token:
            return 41001, "access_token missing"
        expires = self.tokens.get(access_token, self.stable_tokens.get(access_token))
        if expires is None:
            return 40001, "invalid credential, access_token is invalid or not latest"
        if expires < self.clock():
            return 42001, "access_token expired"
        return None

    def chat(self, openid: str) -> list[ChatEntry]:
        return self.chats.setdefault(openid, [])

    def _say(
        self, openid: str, sender: str, kind: str, text: str, card: dict[str, Any] | None = None
    ) -> None:
        self.chat(openid).append(
            ChatEntry(
                openid=openid, sender=sender, kind=kind, text=text, at=self.clock(), card=card
            )
        )

    # ------------------------------------------------------------------ tokens

    def issue_token(self) -> tuple[str, int]:
        now = self.clock()
        self.token_requests += 1
        for token, expires in list(self.tokens.items()):
            # The previous token keeps working for five minutes, then 40001.
            self.tokens[token] = min(expires, now + TOKEN_OVERLAP_SECONDS)
        token = "SIMTOKEN_" + secrets.token_urlsafe(48)
        self.tokens[token] = now + TOKEN_LIFE_SECONDS
        return token, TOKEN_LIFE_SECONDS

    def issue_stable_token(self, *, force_refresh: bool) -> tuple[str, int] | tuple[int, str]:
        now = self.clock()
        self.stable_token_requests += 1
        current = self.current_stable
        current_expiry = self.stable_tokens.get(current or "", 0.0)
        if force_refresh:
            recent = [t for t in self.force_refresh_at if t > now - 86400]
            if len(recent) >= FORCE_REFRESH_PER_DAY:
                return 45009, "reach max api daily quota limit"
            if recent and now - recent[-1] < FORCE_REFRESH_MIN_GAP_SECONDS:
                return 45011, "api minute-quota reach limit"
            self.force_refresh_at = [*recent, now]
        elif current and current_expiry - now > TOKEN_OVERLAP_SECONDS:
            return current, int(current_expiry - now)
        if current and current in self.stable_tokens:
            self.stable_tokens[current] = min(current_expiry, now + TOKEN_OVERLAP_SECONDS)
        token = "SIMSTABLE_" + secrets.token_urlsafe(48)
        self.stable_tokens[token] = now + TOKEN_LIFE_SECONDS
        self.current_stable = token
        return token, TOKEN_LIFE_SECONDS

    # ------------------------------------------------------------------ OAuth

    def issue_code(self, openid: str) -> str:
        code = secrets.token_urlsafe(24)
        self.codes[code] = (openid, self.clock(), False)
        return code

    def exchange_code(self, code: str) -> dict[str, Any]:
        entry = self.codes.get(code)
        if entry is None or self.clock() - entry[1] > CODE_LIFE_SECONDS:
            return {"errcode": 40029, "errmsg": "invalid code"}
        openid, issued, used = entry
        if used:
            return {"errcode": 40163, "errmsg": "code been used"}
        self.codes[code] = (openid, issued, True)
        return {
            "access_token": "SIMUSER_" + secrets.token_urlsafe(24),
            "expires_in": 7200,
            "refresh_token": "SIMREFRESH_" + secrets.token_urlsafe(24),
            "openid": openid,
            "scope": "snsapi_base",
        }

    # ------------------------------------------------------------------ templates

    def send_template(self, body: dict[str, Any]) -> dict[str, Any]:
        openid = str(body.get("touser") or "")
        user = self.users.get(openid)
        if user is None:
            return {"errcode": 40003, "errmsg": "invalid openid"}
        if not user.following:
            return {"errcode": 43004, "errmsg": "require subscribe"}
        template_id = str(body.get("template_id") or "")
        keywords = self.config.templates.get(template_id)
        if keywords is None:
            return {"errcode": 40037, "errmsg": "invalid template_id"}
        data = body.get("data")
        if not isinstance(data, dict):
            return {"errcode": 47001, "errmsg": "data format error"}
        shown: dict[str, str] = {}
        truncated: list[str] = []
        for key, item in data.items():
            if key not in keywords or not isinstance(item, dict) or "value" not in item:
                return {"errcode": 47003, "errmsg": f"argument invalid! data.{key} invalid"}
            # Since 2023-05 WeChat drops line breaks and cuts each value at 20 characters.
            value = str(item["value"]).replace("\r", "").replace("\n", "")
            if len(value) > KEYWORD_MAX_CHARS:
                truncated.append(key)
                value = value[:KEYWORD_MAX_CHARS]
            shown[key] = value
        client_msg_id = body.get("client_msg_id")
        now = self.clock()
        if client_msg_id:
            seen = self._client_msg_ids.get((openid, str(client_msg_id)))
            if seen and now - seen[1] < 600:
                return {"errcode": 0, "errmsg": "ok", "msgid": seen[0]}
        self._next_msgid += 1
        msgid = self._next_msgid
        if client_msg_id:
            self._client_msg_ids[(openid, str(client_msg_id))] = (msgid, now)
        record = {
            "msgid": msgid,
            "touser": openid,
            "template_id": template_id,
            "data": shown,
            "url": body.get("url"),
            "truncated": truncated,
            "client_msg_id": client_msg_id,
        }
        self.sent_templates.append(record)
        status = "failed:user block" if user.blocks_templates else "success"
        if not user.blocks_templates:
            self._say(openid, "account", "card", template_id, card=record)
        self.pending_events.append(
            {
                "ToUserName": self.config.original_id,
                "FromUserName": openid,
                "CreateTime": int(now),
                "MsgType": "event",
                "Event": "TEMPLATESENDJOBFINISH",
                "MsgID": msgid,
                "Status": status,
            }
        )
        if self.config.auto_deliver_events:
            task = asyncio.get_running_loop().create_task(self._deliver_later())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    async def _deliver_later(self) -> None:
        await asyncio.sleep(0.5)
        await self.flush_events()

    async def flush_events(self) -> list[Delivery]:
        """Push every pending asynchronous event (TEMPLATESENDJOBFINISH) to the server."""
        results = []
        while self.pending_events:
            results.append(await self.push(self.pending_events.pop(0)))
        return results

    # ------------------------------------------------------------------ callback pushes

    def signed_request(
        self,
        fields: dict[str, str | int],
        *,
        mode: str | None = None,
        timestamp: int | None = None,
        nonce: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The query and body WeChat would POST for ``fields`` in ``mode``."""
        mode = mode or self.config.callback_mode
        ts = str(timestamp if timestamp is not None else int(self.clock()))
        nonce = nonce or str(secrets.randbelow(10**10))
        xml = render_message(fields)
        query = {
            "signature": url_signature(self.config.token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": str(fields.get("FromUserName", "")),
        }
        if mode == "plaintext":
            return query, xml.encode("utf-8")
        encrypt = self.crypto.encrypt(xml)
        query["encrypt_type"] = "aes"
        query["msg_signature"] = msg_signature(self.config.token, ts, nonce, encrypt)
        if mode == "compatible":
            body = render_message({**fields, "Encrypt": encrypt})
        else:
            body = render_message(
                {"ToUserName": str(fields.get("ToUserName", "")), "Encrypt": encrypt}
            )
        return query, body.encode("utf-8")

    async def push(self, fields: dict[str, str | int]) -> Delivery:
        """Deliver one message like WeChat: 5 s timeout, same XML re-sent on failure."""
        query, body = self.signed_request(fields)
        statuses: list[str] = []
        openid = str(fields.get("FromUserName", ""))
        for attempt in range(1, self.config.callback_deliveries + 1):
            try:
                # wait_for as well as httpx's timeout: an ASGI transport ignores the latter.
                response = await asyncio.wait_for(
                    self._callback.post(
                        self.config.callback_url,
                        params=query,
                        content=body,
                        headers={"Content-Type": "text/xml; charset=utf-8"},
                    ),
                    self.config.callback_timeout_seconds,
                )
            except (httpx.TimeoutException, TimeoutError):
                statuses.append("timeout")
                continue
            except httpx.HTTPError as exc:
                statuses.append(f"error:{type(exc).__name__}")
                continue
            statuses.append(str(response.status_code))
            if response.status_code != 200:
                continue
            reply = self._read_reply(response.content, fields, query)
            if reply == "invalid":
                break
            result = Delivery(
                attempts=attempt,
                ok=True,
                reply=reply if isinstance(reply, dict) else None,
                outcome="reply" if reply else "no_reply",
                statuses=statuses,
            )
            if isinstance(reply, dict):
                self._say(openid, "account", reply.get("MsgType", "text"), reply.get("Content", ""))
            self.deliveries.append(result)
            return result
        failed = Delivery(
            attempts=len(statuses),
            ok=False,
            reply=None,
            outcome=SERVICE_UNAVAILABLE,
            statuses=statuses,
        )
        if fields.get("MsgType") != "event" or fields.get("Event") in {
            "subscribe",
            "CLICK",
            "SCAN",
        }:
            self._say(openid, "system", "notice", SERVICE_UNAVAILABLE)
        self.deliveries.append(failed)
        return failed

    def _read_reply(
        self, content: bytes, sent: dict[str, str | int], query: dict[str, str]
    ) -> dict[str, str] | str:
        """The reply as fields, "" for no reply, "invalid" when WeChat would refuse it."""
        text = content.strip()
        if text in {b"", b"success"}:
            return ""
        try:
            fields = parse_message(text)
            if "Encrypt" in fields:
                if not check_msg_signature(
                    self.config.token,
                    fields.get("TimeStamp", ""),
                    fields.get("Nonce", ""),
                    fields["Encrypt"],
                    fields.get("MsgSignature"),
                ):
                    log.warning("reply MsgSignature does not match")
                    return "invalid"
                fields = parse_message(self.crypto.decrypt(fields["Encrypt"]))
            elif query.get("encrypt_type") == "aes" and self.config.callback_mode == "safe":
                log.warning("plaintext reply in safe mode")
                return "invalid"
        except (XmlError, CryptoError) as exc:
            log.warning("invalid reply from the front server: %s", exc)
            return "invalid"
        ok = (
            fields.get("ToUserName") == sent.get("FromUserName")
            and fields.get("FromUserName") == sent.get("ToUserName")
            and fields.get("CreateTime", "").isdigit()
            and fields.get("MsgType") in REPLY_TYPES
        )
        if not ok:
            log.warning("reply fails WeChat's checks: %s", fields)
            return "invalid"
        return fields

    def _base_fields(self, openid: str) -> dict[str, str | int]:
        return {
            "ToUserName": self.config.original_id,
            "FromUserName": openid,
            "CreateTime": int(self.clock()),
        }

    async def user_sends_text(self, openid: str, content: str) -> Delivery:
        self._say(openid, "user", "text", content)
        self._next_msgid += 1
        fields = {
            **self._base_fields(openid),
            "MsgType": "text",
            "Content": content,
            "MsgId": 6_000_000_000_000_000_000 + self._next_msgid,
        }
        return await self.push(fields)

    async def user_follows(self, openid: str, *, scene: str | None = None) -> Delivery:
        user = self.users[openid]
        user.following, user.followed_at = True, int(self.clock())
        fields: dict[str, str | int] = {
            **self._base_fields(openid),
            "MsgType": "event",
            "Event": "subscribe",
        }
        if scene:
            fields.update(EventKey=f"qrscene_{scene}", Ticket="SIMTICKET")
        else:
            fields["EventKey"] = ""
        return await self.push(fields)

    async def user_unfollows(self, openid: str) -> Delivery:
        self.users[openid].following = False
        return await self.push(
            {
                **self._base_fields(openid),
                "MsgType": "event",
                "Event": "unsubscribe",
                "EventKey": "",
            }
        )

    async def user_scans(self, openid: str, scene: str) -> Delivery:
        if not self.users[openid].following:
            return await self.user_follows(openid, scene=scene)
        return await self.push(
            {
                **self._base_fields(openid),
                "MsgType": "event",
                "Event": "SCAN",
                "EventKey": scene,
                "Ticket": "SIMTICKET",
            }
        )

    async def user_clicks(
        self, openid: str, *, key: str | None = None, url: str | None = None
    ) -> Delivery:
        event = "CLICK" if key is not None else "VIEW"
        return await self.push(
            {
                **self._base_fields(openid),
                "MsgType": "event",
                "Event": event,
                "EventKey": key if key is not None else url or "",
            }
        )


# ---------------------------------------------------------------------- HTTP API

router = APIRouter()


def _sim(request: Request) -> SimPlatform:
    platform: SimPlatform = request.app.state.platform
    return platform


def _err(errcode: int, errmsg: str) -> JSONResponse:
    rid = secrets.token_hex(4)
    return JSONResponse({"errcode": errcode, "errmsg": f"{errmsg} rid: {rid}"})


def _check_app(sim: SimPlatform, appid: str | None, secret: str | None) -> JSONResponse | None:
    if appid != sim.config.appid:
        return _err(40013, "invalid appid")
    if secret is None or not secrets.compare_digest(secret, sim.config.appsecret):
        return _err(40125, "invalid appsecret")
    return None


@router.get("/cgi-bin/token")
async def token(request: Request) -> JSONResponse:
    sim, q = _sim(request), request.query_params
    if (code := sim._injected("token")) is not None:
        return _err(code, "injected")
    if q.get("grant_type") != "client_credential":
        return _err(40002, "invalid grant_type")
    if (bad := _check_app(sim, q.get("appid"), q.get("secret"))) is not None:
        return bad
    value, expires_in = sim.issue_token()
    return JSONResponse({"access_token": value, "expires_in": expires_in})


@router.post("/cgi-bin/stable_token")
async def stable_token(request: Request) -> JSONResponse:
    sim = _sim(request)
    try:
        body = await request.json()
    except ValueError:
        return _err(47001, "data format error")
    if not isinstance(body, dict):
        return _err(47001, "data format error")
    if (code := sim._injected("stable_token")) is not None:
        sim.stable_token_requests += 1
        return _err(code, "injected")
    if body.get("grant_type") != "client_credential":
        return _err(40002, "invalid grant_type")
    if (bad := _check_app(sim, body.get("appid"), body.get("secret"))) is not None:
        return bad
    result = sim.issue_stable_token(force_refresh=bool(body.get("force_refresh")))
    if isinstance(result[0], int):
        return _err(result[0], str(result[1]))
    return JSONResponse({"access_token": result[0], "expires_in": result[1]})


def _token_guard(sim: SimPlatform, request: Request, operation: str) -> JSONResponse | None:
    if (code := sim._injected(operation)) is not None:
        return _err(code, "injected")
    problem = sim.token_error(request.query_params.get("access_token"))
    return _err(*problem) if problem else None


@router.get("/connect/oauth2/authorize", response_model=None)
async def authorize(request: Request) -> Response:
    sim, q = _sim(request), request.query_params
    redirect_uri = q.get("redirect_uri") or ""
    if q.get("appid") != sim.config.appid:
        return HTMLResponse("<p>10012 appid 参数错误</p>", status_code=400)
    if not redirect_uri:
        return HTMLResponse("<p>10011 redirect_uri 参数错误</p>", status_code=400)
    host = urlsplit(redirect_uri).hostname or ""
    if sim.config.oauth_redirect_hosts and host not in sim.config.oauth_redirect_hosts:
        return HTMLResponse("<p>10003 redirect_uri 域名与后台配置不一致</p>", status_code=400)
    if q.get("scope") not in {"snsapi_base", "snsapi_userinfo"}:
        return HTMLResponse("<p>10005 此公众号并没有这些scope的权限</p>", status_code=400)
    openid = q.get("as_openid") or request.cookies.get("wxsim_openid") or ""
    if openid not in sim.users:
        # Outside the phone page the sim does not know who is holding the phone.
        links = "".join(
            f'<li><a href="?{escape(urlencode({**dict(q), "as_openid": u.openid}))}">'
            f"{escape(u.nickname)}</a></li>"
            for u in sim.users.values()
        )
        return HTMLResponse(f"<h1>模拟微信授权</h1><p>请选择用户：</p><ul>{links}</ul>")
    code = sim.issue_code(openid)
    sep = "&" if "?" in redirect_uri else "?"
    target = f"{redirect_uri}{sep}{urlencode({'code': code, 'state': q.get('state', '')})}"
    return RedirectResponse(target, status_code=302)


@router.get("/sns/oauth2/access_token")
async def oauth_access_token(request: Request) -> JSONResponse:
    sim, q = _sim(request), request.query_params
    if (bad := _check_app(sim, q.get("appid"), q.get("secret"))) is not None:
        return bad
    if not q.get("code"):
        return _err(41008, "missing code")
    if q.get("grant_type") != "authorization_code":
        return _err(40002, "invalid grant_type")
    result = sim.exchange_code(q["code"])
    if "errcode" in result:
        return _err(result["errcode"], result["errmsg"])
    return JSONResponse(result)


@router.get("/cgi-bin/ticket/getticket")
async def getticket(request: Request) -> JSONResponse:
    sim = _sim(request)
    if (bad := _token_guard(sim, request, "ticket")) is not None:
        return bad
    sim.ticket_requests += 1
    if request.query_params.get("type") != "jsapi":
        return _err(40097, "invalid args")
    now = sim.clock()
    if sim.ticket is None or sim.ticket[1] < now:
        sim.ticket = ("SIMTICKET_" + secrets.token_urlsafe(40), now + TOKEN_LIFE_SECONDS)
    return JSONResponse(
        {
            "errcode": 0,
            "errmsg": "ok",
            "ticket": sim.ticket[0],
            "expires_in": int(sim.ticket[1] - now),
        }
    )


@router.post("/sim/jssdk/check")
async def jssdk_check(request: Request) -> JSONResponse:
    """Helper: does a page's ``wx.config`` signature match the current ticket?"""
    sim, body = _sim(request), await request.json()
    if sim.ticket is None:
        return JSONResponse({"ok": False, "reason": "no ticket issued"})
    expected = jssdk_signature(
        jsapi_ticket=sim.ticket[0],
        noncestr=str(body.get("nonceStr")),
        timestamp=str(body.get("timestamp")),
        url=str(body.get("url")),
    )
    return JSONResponse({"ok": secrets.compare_digest(expected, str(body.get("signature")))})


def _menu_problem(menu: Any) -> str | None:
    if not isinstance(menu, dict) or not isinstance(menu.get("button"), list):
        return "button missing"
    buttons = menu["button"]
    if not 1 <= len(buttons) <= 3:
        return "1 to 3 top-level buttons"
    for button in buttons:
        subs = button.get("sub_button") if isinstance(button, dict) else None
        items = subs if subs else [button]
        if subs is not None and len(subs) > 5:
            return "at most 5 sub buttons"
        for item in items:
            if not isinstance(item, dict) or not item.get("name"):
                return "button name missing"
            kind = item.get("type")
            if kind == "click" and not item.get("key"):
                return "click button without key"
            if kind == "view" and not str(item.get("url", "")).startswith(("http://", "https://")):
                return "view button without url"
            if kind not in {"click", "view"}:
                return f"unsupported button type {kind!r}"
    return None


@router.post("/cgi-bin/menu/create")
async def menu_create(request: Request) -> JSONResponse:
    sim = _sim(request)
    if (bad := _token_guard(sim, request, "menu")) is not None:
        return bad
    try:
        menu = await request.json()
    except ValueError:
        return _err(47001, "data format error")
    if (problem := _menu_problem(menu)) is not None:
        return _err(40016, f"invalid button: {problem}")
    sim.menu = menu
    return JSONResponse({"errcode": 0, "errmsg": "ok"})


@router.get("/cgi-bin/menu/get")
async def menu_get(request: Request) -> JSONResponse:
    sim = _sim(request)
    if (bad := _token_guard(sim, request, "menu")) is not None:
        return bad
    if sim.menu is None:
        return _err(46003, "menu no exist")
    return JSONResponse({"menu": sim.menu})


@router.post("/cgi-bin/message/template/send")
async def template_send(request: Request) -> JSONResponse:
    sim = _sim(request)
    if (bad := _token_guard(sim, request, "template")) is not None:
        return bad
    try:
        body = await request.json()
    except ValueError:
        return _err(47001, "data format error")
    if not isinstance(body, dict):
        return _err(47001, "data format error")
    result = sim.send_template(body)
    if result["errcode"]:
        return _err(result["errcode"], result["errmsg"])
    return JSONResponse(result)


@router.get("/cgi-bin/user/info")
async def user_info(request: Request) -> JSONResponse:
    sim = _sim(request)
    if (bad := _token_guard(sim, request, "user_info")) is not None:
        return bad
    user = sim.users.get(request.query_params.get("openid") or "")
    if user is None:
        return _err(40003, "invalid openid")
    if not user.following:
        return JSONResponse({"subscribe": 0, "openid": user.openid})
    return JSONResponse(
        {
            "subscribe": 1,
            "openid": user.openid,
            "nickname": user.nickname,
            "sex": 0,
            "language": "zh_CN",
            "city": "",
            "province": "",
            "country": "",
            "subscribe_time": user.followed_at,
        }
    )


@router.post("/sim/inject")
async def inject(request: Request) -> JSONResponse:
    """Fault injection for demos and tests: the next ``times`` calls of ``operation``
    (token, stable_token, template, menu, ticket, user_info) answer ``errcode``."""
    sim = _sim(request)
    try:
        body = await request.json()
        operation, errcode = str(body["operation"]), int(body["errcode"])
        times = int(body.get("times", 1))
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "operation and errcode are required"}, status_code=422)
    known = {"token", "stable_token", "template", "menu", "ticket", "user_info"}
    if operation not in known or not 1 <= times <= 100:
        return JSONResponse({"error": f"operation must be one of {sorted(known)}"}, status_code=422)
    sim.inject(operation, errcode, times=times)
    return JSONResponse({"operation": operation, "errcode": errcode, "times": times})
