"""Calls the HIS makes to the front server (the cashier API, the paper QR endpoint): signed
exactly as we sign ours to it (docs/his-bridge.md section 2, ``his/signing.py``) with the
bridge's key id and secret, and verified the way the demo HIS verifies ours — headers, key,
300-second window, HMAC over method, path, query, timestamp, nonce and body hash — before
the body is parsed. The nonce is recorded in its own committed step, so a replay is refused
even when the first call then failed.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from frontdesk.billing import cashier
from frontdesk.core.clock import now as clock_now
from frontdesk.his import signing

MAX_BODY = 64 * 1024


def envelope(status: int, code: str, message: str, *, retryable: bool = False) -> JSONResponse:
    """The bridge's error envelope."""
    return JSONResponse(
        {"code": code, "message": message, "retryable": retryable},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


async def signed_body(request: Request) -> bytes | JSONResponse:
    """The raw body of a correctly signed, fresh request from the HIS, or the refusal."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return envelope(413, "body_too_large", f"bodies are limited to {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        return envelope(413, "body_too_large", f"bodies are limited to {MAX_BODY} bytes")
    settings = request.app.state.settings
    keys = {settings.his_key_id: settings.his_secret.get_secret_value()}
    raw = request.scope.get("raw_path")
    now = clock_now()
    try:
        key_id, nonce = signing.verify(
            keys=keys,
            headers=request.headers,
            method=request.method,
            # the path as sent on the request line (percent-encoding kept), as signed
            path=raw.decode("latin-1") if raw else request.url.path,
            query=request.scope.get("query_string", b"").decode("latin-1"),
            body=body,
            unix_time=int(now.timestamp()),
        )
    except signing.SignatureError as exc:
        return envelope(401, exc.code, exc.message)
    async with request.app.state.session_provider() as session:
        fresh = await cashier.record_inbound_nonce(session, key_id=key_id, nonce=nonce, now=now)
    if not fresh:
        return envelope(401, "nonce_reused", "this nonce was already used")
    request.state.his_key_id = key_id
    return body
