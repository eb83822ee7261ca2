"""Request signing of the HIS bridge protocol (version 1), shared by both sides.

The client, the demo HIS and the conformance kit import this one module, so the three can
never disagree on the string that is signed. The string (see docs/his-bridge.md) is::

    HIS1-HMAC-SHA256\\n
    <METHOD>\\n
    <path>\\n
    <canonical query>\\n
    <timestamp>\\n
    <nonce>\\n
    <hex SHA-256 of the body bytes>

and the signature is the lower-case hex HMAC-SHA256 of it under the key's secret. The key id
travels in a header so hospitals can rotate keys (two ids valid at once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

ALGORITHM = "HIS1-HMAC-SHA256"
HEADER_KEY_ID = "X-His-Key-Id"
HEADER_TIMESTAMP = "X-His-Timestamp"
HEADER_NONCE = "X-His-Nonce"
HEADER_SIGNATURE = "X-His-Signature"
HEADER_IDEMPOTENCY_KEY = "Idempotency-Key"
WINDOW_SECONDS = 300
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _encode(value: str) -> str:
    # RFC 3986 unreserved characters stay; everything else is %XX (upper case), space is %20.
    return quote(value, safe="-_.~")


def canonical_query(query: str | Iterable[tuple[str, str]]) -> str:
    """Pairs percent-encoded, sorted by key then value, joined by ``&`` (empty if none)."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    encoded = sorted((_encode(k), _encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def string_to_sign(
    *,
    method: str,
    path: str,
    query: str | Iterable[tuple[str, str]],
    timestamp: str,
    nonce: str,
    body: bytes,
) -> str:
    return "\n".join(
        [ALGORITHM, method.upper(), path, canonical_query(query), timestamp, nonce, body_hash(body)]
    )


def sign(
    secret: str,
    *,
    method: str,
    path: str,
    query: str | Iterable[tuple[str, str]],
    timestamp: str,
    nonce: str,
    body: bytes,
) -> str:
    message = string_to_sign(
        method=method, path=path, query=query, timestamp=timestamp, nonce=nonce, body=body
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class SignedHeaders:
    key_id: str
    timestamp: str
    nonce: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            HEADER_KEY_ID: self.key_id,
            HEADER_TIMESTAMP: self.timestamp,
            HEADER_NONCE: self.nonce,
            HEADER_SIGNATURE: self.signature,
        }


def signed_headers(
    *,
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: str | Iterable[tuple[str, str]],
    body: bytes,
    unix_time: int,
    nonce: str | None = None,
) -> SignedHeaders:
    nonce = nonce or new_nonce()
    timestamp = str(unix_time)
    signature = sign(
        secret, method=method, path=path, query=query, timestamp=timestamp, nonce=nonce, body=body
    )
    return SignedHeaders(key_id, timestamp, nonce, signature)


class SignatureError(Exception):
    """Why a request's signature was refused; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def verify(
    *,
    keys: Mapping[str, str],
    headers: Mapping[str, str],
    method: str,
    path: str,
    query: str,
    body: bytes,
    unix_time: int,
    window_seconds: int = WINDOW_SECONDS,
) -> tuple[str, str]:
    """Check a request's signature headers; returns (key_id, nonce) or raises SignatureError.

    The caller must still refuse a nonce it has seen within the window (it owns the store).
    ``headers`` must be case-insensitive (Starlette's and httpx's are).
    """
    key_id = headers.get(HEADER_KEY_ID, "")
    timestamp = headers.get(HEADER_TIMESTAMP, "")
    nonce = headers.get(HEADER_NONCE, "")
    signature = headers.get(HEADER_SIGNATURE, "")
    if not (key_id and timestamp and nonce and signature):
        raise SignatureError("signature_missing", "signature headers are required")
    if not KEY_ID_RE.match(key_id) or key_id not in keys:
        raise SignatureError("unknown_key", "unknown key id")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("timestamp_out_of_window", "timestamp must be unix seconds")
    if abs(unix_time - int(timestamp)) > window_seconds:
        raise SignatureError(
            "timestamp_out_of_window", f"timestamp outside the {window_seconds}s window"
        )
    if not NONCE_RE.match(nonce):
        raise SignatureError("signature_invalid", "nonce must be 16-64 of [A-Za-z0-9_-]")
    expected = sign(
        keys[key_id],
        method=method,
        path=path,
        query=query,
        timestamp=timestamp,
        nonce=nonce,
        body=body,
    )
    if not hmac.compare_digest(expected, signature.lower()):
        raise SignatureError("signature_invalid", "signature does not match")
    return key_id, nonce
