"""WeChat Pay API v3 cryptography: request signing, response/notification verification,
AEAD_AES_256_GCM, JSAPI ``paySign`` and the trade-bill SHA-1 check.

Pure functions over bytes; no I/O. Used by our client (``client.py``), by the notify route and,
from the other side of the wire, by the simulator — the golden vectors of the specification
(shared/protocols/wechat.md §4.2-§4.10) keep both honest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
DEFAULT_WINDOW_SECONDS = 300  # the usual ±5 minutes (spec §4.3)


class SignatureError(Exception):
    """A signature, header set or ciphertext did not check out; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- keys -----------------------------------------------------------------------------------


def _pem(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def load_private_key(pem: bytes | str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(_pem(pem), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("WeChat Pay needs an RSA private key")
    return key


def load_public_key(pem: bytes | str) -> rsa.RSAPublicKey:
    """An RSA public key from a ``PUBLIC KEY`` PEM or from a certificate PEM."""
    raw = _pem(pem)
    key: object
    if b"BEGIN CERTIFICATE" in raw:
        key = x509.load_pem_x509_certificate(raw).public_key()
    else:
        key = serialization.load_pem_public_key(raw)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("WeChat Pay needs an RSA public key")
    return key


def certificate_serial(cert_pem: bytes | str) -> str:
    """The serial number as WeChat Pay writes it in ``Wechatpay-Serial``: upper-case hex."""
    return format(x509.load_pem_x509_certificate(_pem(cert_pem)).serial_number, "X")


def public_key_pem(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def new_nonce() -> str:
    """32 upper-case hex characters, as the official SDKs make them."""
    return secrets.token_hex(16).upper()


# --- RSA signatures -------------------------------------------------------------------------


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), Base64. Deterministic, hence the exact golden vectors."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def canonical_url(url: str) -> str:
    """Path plus ``?query`` of an absolute or relative URL (no scheme, no host)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def request_message(
    method: str, url: str, timestamp: int | str, nonce: str, body: bytes = b""
) -> bytes:
    """``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` over the exact body bytes sent."""
    head = f"{method.upper()}\n{canonical_url(url)}\n{timestamp}\n{nonce}\n".encode()
    return head + body + b"\n"


def response_message(timestamp: int | str, nonce: str, body: bytes) -> bytes:
    """``TIMESTAMP\\nNONCE\\nBODY\\n`` — what responses and notifications are signed over."""
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def authorization_header(
    *,
    mchid: str,
    serial_no: str,
    key: rsa.RSAPrivateKey,
    method: str,
    url: str,
    body: bytes,
    timestamp: int,
    nonce: str,
) -> str:
    signature = rsa_sign(key, request_message(method, url, timestamp, nonce, body))
    return (
        f'{SCHEMA} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


@dataclass(frozen=True)
class Authorization:
    mchid: str
    nonce_str: str
    signature: str
    timestamp: int
    serial_no: str


_AUTH_ITEM = re.compile(r'\s*([a-z_]+)="([^"]*)"\s*')


def parse_authorization(header: str) -> Authorization:
    """Parse ``WECHATPAY2-SHA256-RSA2048 k="v",...`` (items in any order)."""
    schema, _, rest = header.strip().partition(" ")
    if schema != SCHEMA:
        raise SignatureError("bad_schema", schema[:40])
    items: dict[str, str] = {}
    for part in rest.split(","):
        match = _AUTH_ITEM.fullmatch(part)
        if match is None:
            raise SignatureError("bad_authorization", part[:40])
        items[match.group(1)] = match.group(2)
    needed = ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
    missing = [name for name in needed if not items.get(name)]
    if missing:
        raise SignatureError("bad_authorization", "missing " + ",".join(missing))
    if not items["timestamp"].isdigit() or len(items["timestamp"]) > 12:
        raise SignatureError("bad_authorization", "timestamp")
    return Authorization(
        mchid=items["mchid"],
        nonce_str=items["nonce_str"],
        signature=items["signature"],
        timestamp=int(items["timestamp"]),
        serial_no=items["serial_no"],
    )


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value or ""


@dataclass(frozen=True)
class SignedHeaders:
    timestamp: int
    nonce: str
    signature: str
    serial: str


class PlatformVerifier:
    """Verifies WeChat Pay's signatures with the platform keys, selected by ``Wechatpay-Serial``.

    Holds both kinds at once (public-key id ``PUB_KEY_ID_…`` and certificate serials) because
    merchants migrating between the two modes see both (spec §4.1).
    """

    def __init__(
        self,
        keys: Mapping[str, rsa.RSAPublicKey] | None = None,
        *,
        window_seconds: int = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        for serial, key in (keys or {}).items():
            self.add(serial, key)
        self.window_seconds = window_seconds

    def add(self, serial: str, key: rsa.RSAPublicKey) -> None:
        self._keys[self._norm(serial)] = key

    def knows(self, serial: str) -> bool:
        return self._norm(serial) in self._keys

    @property
    def serials(self) -> list[str]:
        return sorted(self._keys)

    def keys(self) -> dict[str, rsa.RSAPublicKey]:
        return dict(self._keys)

    @staticmethod
    def _norm(serial: str) -> str:
        # Certificate serials are hex (case-insensitive); public-key ids are exact strings.
        return serial if serial.startswith("PUB_KEY_ID_") else serial.upper()

    @staticmethod
    def signed_headers(headers: Mapping[str, str]) -> SignedHeaders:
        timestamp = _header(headers, "Wechatpay-Timestamp")
        nonce = _header(headers, "Wechatpay-Nonce")
        signature = _header(headers, "Wechatpay-Signature")
        serial = _header(headers, "Wechatpay-Serial")
        if not (timestamp and nonce and signature and serial):
            raise SignatureError("missing_headers")
        kind = _header(headers, "Wechatpay-Signature-Type")
        if kind and kind != SCHEMA:
            raise SignatureError("unsupported_signature_type", kind[:40])
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureError("bad_timestamp")
        return SignedHeaders(int(timestamp), nonce, signature, serial)

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: int) -> SignedHeaders:
        """Check a response or notification; raise ``SignatureError`` with the reason."""
        signed = self.signed_headers(headers)
        if signed.signature.startswith(SIGNTEST_PREFIX):
            # Deliberate probe traffic from WeChat Pay: must never be accepted.
            raise SignatureError("signature_probe")
        key = self._keys.get(self._norm(signed.serial))
        if key is None:
            raise SignatureError("unknown_serial", signed.serial[:64])
        if abs(now - signed.timestamp) > self.window_seconds:
            raise SignatureError("stale_timestamp", str(signed.timestamp))
        message = response_message(signed.timestamp, signed.nonce, body)
        if not rsa_verify(key, message, signed.signature):
            raise SignatureError("bad_signature")
        return signed


def sign_response_headers(
    *, key: rsa.RSAPrivateKey, serial: str, body: bytes, timestamp: int, nonce: str | None = None
) -> dict[str, str]:
    """The ``Wechatpay-*`` headers WeChat Pay puts on a response or notification."""
    nonce = nonce or new_nonce()
    return {
        "Wechatpay-Timestamp": str(timestamp),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": rsa_sign(key, response_message(timestamp, nonce, body)),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": SCHEMA,
    }


# --- AEAD_AES_256_GCM -----------------------------------------------------------------------


def _aes_key(apiv3_key: bytes | str) -> bytes:
    key = apiv3_key.encode() if isinstance(apiv3_key, str) else apiv3_key
    if len(key) != 32:
        raise ValueError("the APIv3 key must be exactly 32 bytes")
    return key


def aead_decrypt(
    apiv3_key: bytes | str, *, nonce: str, associated_data: str, ciphertext: str
) -> bytes:
    """Decrypt a ``resource`` (ciphertext = Base64 of encrypted bytes ‖ 16-byte tag)."""
    try:
        data = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("bad_ciphertext", "not base64") from exc
    if len(data) < 16:
        raise SignatureError("bad_ciphertext", "too short")
    try:
        return AESGCM(_aes_key(apiv3_key)).decrypt(
            nonce.encode(), data, associated_data.encode() if associated_data else None
        )
    except (InvalidTag, ValueError) as exc:
        raise SignatureError("decrypt_failed") from exc


def aead_encrypt(
    apiv3_key: bytes | str, *, nonce: str, associated_data: str, plaintext: bytes
) -> str:
    sealed = AESGCM(_aes_key(apiv3_key)).encrypt(
        nonce.encode(), plaintext, associated_data.encode() if associated_data else None
    )
    return base64.b64encode(sealed).decode()


# --- JSAPI paySign --------------------------------------------------------------------------


def pay_sign_message(app_id: str, time_stamp: str, nonce_str: str, package: str) -> bytes:
    return f"{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n".encode()


def jsapi_pay_sign(
    key: rsa.RSAPrivateKey, *, app_id: str, time_stamp: str, nonce_str: str, package: str
) -> str:
    """``paySign`` for ``getBrandWCPayRequest`` (signType RSA; signType itself is not signed)."""
    return rsa_sign(key, pay_sign_message(app_id, time_stamp, nonce_str, package))


def verify_pay_sign(
    key: rsa.RSAPublicKey,
    *,
    app_id: str,
    time_stamp: str,
    nonce_str: str,
    package: str,
    pay_sign: str,
) -> bool:
    return rsa_verify(key, pay_sign_message(app_id, time_stamp, nonce_str, package), pay_sign)


# --- trade bill -----------------------------------------------------------------------------


def bill_sha1(uncompressed: bytes) -> str:
    """SHA-1 hex of the *uncompressed* bill (spec §4.10)."""
    return hashlib.sha1(uncompressed).hexdigest()  # noqa: S324 - the vendor's integrity hash


def bill_hash_matches(uncompressed: bytes, expected_hex: str) -> bool:
    return hmac.compare_digest(bill_sha1(uncompressed), expected_hex.strip().lower())
