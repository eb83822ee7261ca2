"""``POST /wechat/pay/notify``: where WeChat Pay delivers payment and refund notifications.

One endpoint for both kinds (the envelope is the same; ``event_type`` tells them apart), so
refunds may leave ``notify_url`` unset or point at the same URL. Answers as WeChat Pay expects
(spec §4.7): 204 when stored (or already stored), 4xx/5xx with ``{"code":"FAIL",...}``
otherwise — only the status counts, and a non-2xx makes WeChat Pay retry on its schedule.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from frontdesk.core import clock
from frontdesk.web.deps import ContainerDep, SessionDep
from frontdesk.wechat.pay.notifications import handle_notification
from frontdesk.wechat.pay.port import NotificationRejected

log = logging.getLogger("frontdesk.wechat.pay.notify_routes")

NOTIFY_PATH = "/wechat/pay/notify"

router = APIRouter(tags=["wechat-pay"])


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": "FAIL", "message": message}, status_code=status)


@router.post(NOTIFY_PATH, include_in_schema=False)
async def wechatpay_notify(
    request: Request, session: SessionDep, container: ContainerDep
) -> Response:
    started = time.perf_counter()
    pay = container.services.get("pay")
    if pay is None:
        log.error("wechatpay notify refused: WeChat Pay is not configured")
        return _fail(503, "not configured")
    limit = container.settings.wechatpay_notify_max_bytes
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > limit:
        log.warning("wechatpay notify refused: body too large or bad length (%s)", declared[:20])
        return _fail(413, "body too large")
    body = await request.body()
    if len(body) > limit:
        log.warning("wechatpay notify refused: body of %d bytes", len(body))
        return _fail(413, "body too large")
    try:
        # A savepoint: if a handler fails, the inbox row goes too, and WeChat Pay retries.
        async with session.begin_nested():
            outcome, event = await handle_notification(
                session, pay, request.headers, body, now=clock.now()
            )
    except NotificationRejected as exc:
        log.warning(
            "wechatpay notify refused: %s",
            exc.reason,
            extra={
                "operation": "wechatpay.notify",
                "outcome": exc.reason,
                "status": exc.http_status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return _fail(exc.http_status, exc.reason)
    except Exception:
        log.exception("wechatpay notify: a handler failed; WeChat Pay will retry")
        return _fail(500, "handler failed")
    log.info(
        "wechatpay notify %s: %s",
        event.notify_id,
        outcome.value,
        extra={
            "operation": "wechatpay.notify",
            "outcome": outcome.value,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return Response(status_code=204)
