"""The real ``WeChatPlatform`` adapter: async httpx against ``settings.wechat_api_base``.

Explicit timeouts; every call logged with its operation, duration and outcome (never the
secret, the token or a full openid). Non-zero errcodes are classified by ``errors_map``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from frontdesk.wechat.oa import errors_map
from frontdesk.wechat.oa.port import (
    AccessToken,
    JsTicket,
    OAuthIdentity,
    TemplateRequest,
    TemplateSent,
    UserInfo,
    WeChatUnavailable,
)

log = logging.getLogger("frontdesk.wechat.oa")

TRANSPORT_ERROR = -2  # our own code for "no answer": never sent by WeChat


def _mask_openid(openid: str) -> str:
    return openid[:6] + "…" if len(openid) > 6 else openid


class HttpWeChatPlatform:
    def __init__(
        self,
        *,
        base_url: str,
        appid: str,
        appsecret: str,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.appid = appid
        self._secret = appsecret
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_seconds, connect=min(3.0, timeout_seconds)),
            transport=transport,
            headers={"User-Agent": "frontdesk-wechat/1"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                content = (
                    json.dumps(body, ensure_ascii=False).encode("utf-8")
                    if body is not None
                    else None
                )
                response = await self._http.request(
                    method,
                    path,
                    params=params,
                    content=content,
                    headers={"Content-Type": "application/json"} if content else None,
                )
            except httpx.HTTPError as exc:
                outcome = f"transport:{type(exc).__name__}"
                raise WeChatUnavailable(
                    TRANSPORT_ERROR, type(exc).__name__, operation=operation
                ) from exc
            if response.status_code >= 500:
                outcome = f"http:{response.status_code}"
                raise WeChatUnavailable(
                    TRANSPORT_ERROR, f"HTTP {response.status_code}", operation=operation
                )
            try:
                data = response.json()
            except ValueError as exc:
                outcome = "bad_json"
                raise WeChatUnavailable(
                    TRANSPORT_ERROR, "response is not JSON", operation=operation
                ) from exc
            if not isinstance(data, dict):
                outcome = "bad_json"
                raise WeChatUnavailable(
                    TRANSPORT_ERROR, "response is not an object", operation=operation
                )
            errcode = int(data.get("errcode") or 0)
            if errcode != 0:
                outcome = f"errcode:{errcode}"
                raise errors_map.to_error(errcode, str(data.get("errmsg", "")), operation=operation)
            return data
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            log.info(
                "wechat %s %s in %.1f ms",
                operation,
                outcome,
                duration_ms,
                extra={
                    "operation": f"wechat.{operation}",
                    "outcome": outcome,
                    "duration_ms": duration_ms,
                },
            )

    async def fetch_access_token(self) -> AccessToken:
        data = await self._call(
            "token",
            "GET",
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self._secret},
        )
        return AccessToken(
            token=str(data["access_token"]), expires_in_seconds=int(data["expires_in"])
        )

    async def fetch_stable_token(self, *, force_refresh: bool = False) -> AccessToken:
        data = await self._call(
            "stable_token",
            "POST",
            "/cgi-bin/stable_token",
            body={
                "grant_type": "client_credential",
                "appid": self.appid,
                "secret": self._secret,
                "force_refresh": force_refresh,
            },
        )
        return AccessToken(
            token=str(data["access_token"]), expires_in_seconds=int(data["expires_in"])
        )

    async def exchange_oauth_code(self, code: str) -> OAuthIdentity:
        data = await self._call(
            "oauth_code",
            "GET",
            "/sns/oauth2/access_token",
            params={
                "appid": self.appid,
                "secret": self._secret,
                "code": code,
                "grant_type": "authorization_code",
            },
        )
        return OAuthIdentity(
            openid=str(data["openid"]),
            scope=str(data.get("scope", "")),
            unionid=data.get("unionid"),
            is_snapshot_user=int(data.get("is_snapshotuser") or 0) == 1,
        )

    async def send_template(self, access_token: str, request: TemplateRequest) -> TemplateSent:
        body: dict[str, Any] = {
            "touser": request.openid,
            "template_id": request.template_id,
            "data": {key: {"value": value} for key, value in request.data.items()},
        }
        if request.url:
            body["url"] = request.url
        if request.client_msg_id:
            body["client_msg_id"] = request.client_msg_id
        data = await self._call(
            "template_send",
            "POST",
            "/cgi-bin/message/template/send",
            params={"access_token": access_token},
            body=body,
        )
        log.debug("template %s sent to %s", request.template_id, _mask_openid(request.openid))
        return TemplateSent(msgid=int(data["msgid"]))

    async def create_menu(self, access_token: str, menu: dict[str, Any]) -> None:
        await self._call(
            "menu_create",
            "POST",
            "/cgi-bin/menu/create",
            params={"access_token": access_token},
            body=menu,
        )

    async def get_user_info(self, access_token: str, openid: str) -> UserInfo:
        data = await self._call(
            "user_info",
            "GET",
            "/cgi-bin/user/info",
            params={"access_token": access_token, "openid": openid, "lang": "zh_CN"},
        )
        subscribed = int(data.get("subscribe") or 0) == 1
        return UserInfo(
            openid=str(data.get("openid", openid)),
            subscribed=subscribed,
            nickname=str(data.get("nickname", "")),
            subscribed_at_unix=data.get("subscribe_time"),
            unionid=data.get("unionid"),
        )

    async def get_js_ticket(self, access_token: str) -> JsTicket:
        data = await self._call(
            "js_ticket",
            "GET",
            "/cgi-bin/ticket/getticket",
            params={"access_token": access_token, "type": "jsapi"},
        )
        return JsTicket(ticket=str(data["ticket"]), expires_in_seconds=int(data["expires_in"]))
