"""Official Account callback cryptography (wechat.md §1.2, §1.5, §2.4).

- ``url_signature``: SHA-1 of the sorted token/timestamp/nonce (GET verification and the
  plain ``signature`` query parameter of every POST).
- ``msg_signature``: the same over token/timestamp/nonce/Encrypt (safe and compatible mode).
- ``MessageCrypto``: WXBizMsgCrypt, i.e. AES-256-CBC with the IV = first 16 key bytes, PKCS#7
  padding to a 32-byte block applied by hand, plaintext = random16 + big-endian u32 length +
  XML + AppID.
- ``jssdk_signature``: the ``wx.config`` signature.

Every comparison of a signature or AppID is constant-time (``hmac.compare_digest``).
Error codes follow the official sample's names so logs read the same as WeChat's docs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
from xml.sax.saxutils import escape

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_SIZE = 32  # WeChat pads to 32 bytes, not the AES block size of 16


class CryptoError(Exception):
    """A callback failed a cryptographic check; ``code`` is the WXBizMsgCrypt error code."""

    SIGNATURE = -40001
    PARSE_XML = -40002
    ILLEGAL_AES_KEY = -40004
    APPID_MISMATCH = -40005
    DECRYPT = -40007
    ILLEGAL_BUFFER = -40008
    BASE64_DECODE = -40010

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324


def url_signature(token: str, timestamp: str, nonce: str) -> str:
    """The plain ``signature``: SHA-1 of token, timestamp and nonce sorted as strings."""
    return _sha1_sorted(token, timestamp, nonce)


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """The ``msg_signature`` of an encrypted message (also ``MsgSignature`` of a reply)."""
    return _sha1_sorted(token, timestamp, nonce, encrypt)


def signatures_equal(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii", "replace"))


def check_url_signature(token: str, timestamp: str, nonce: str, signature: str | None) -> bool:
    return signatures_equal(url_signature(token, timestamp, nonce), signature)


def check_msg_signature(
    token: str, timestamp: str, nonce: str, encrypt: str, signature: str | None
) -> bool:
    return signatures_equal(msg_signature(token, timestamp, nonce, encrypt), signature)


def jssdk_signature(*, jsapi_ticket: str, noncestr: str, timestamp: str | int, url: str) -> str:
    """The ``wx.config`` signature: fields sorted by name, ``k=v`` joined by ``&``, SHA-1.

    ``url`` is the page's full URL without the ``#`` fragment (removed here to be safe).
    """
    fields = {
        "jsapi_ticket": jsapi_ticket,
        "noncestr": noncestr,
        "timestamp": str(timestamp),
        "url": url.split("#", 1)[0],
    }
    joined = "&".join(f"{k}={fields[k]}" for k in sorted(fields))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()  # noqa: S324


def decode_aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise CryptoError(CryptoError.ILLEGAL_AES_KEY, "EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoError(CryptoError.ILLEGAL_AES_KEY, "EncodingAESKey is not Base64") from exc
    if len(key) != 32:
        raise CryptoError(CryptoError.ILLEGAL_AES_KEY, "EncodingAESKey must decode to 32 bytes")
    return key


def pkcs7_pad(data: bytes) -> bytes:
    amount = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes([amount]) * amount


def pkcs7_unpad(data: bytes) -> bytes:
    if not data:
        raise CryptoError(CryptoError.ILLEGAL_BUFFER, "empty plaintext")
    amount = data[-1]
    if not 1 <= amount <= BLOCK_SIZE or amount > len(data):
        raise CryptoError(CryptoError.ILLEGAL_BUFFER, "bad padding")
    return data[:-amount]


class MessageCrypto:
    """Encrypt and decrypt safe-mode messages for one Official Account."""

    def __init__(self, *, token: str, encoding_aes_key: str, appid: str) -> None:
        self.token = token
        self.appid = appid
        self._key = decode_aes_key(encoding_aes_key)
        self._iv = self._key[:16]

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._iv))

    def encrypt(self, xml: bytes | str, *, random_prefix: bytes | None = None) -> str:
        """The Base64 ``Encrypt`` value for ``xml`` (random prefix only fixed in tests)."""
        body = xml.encode("utf-8") if isinstance(xml, str) else xml
        prefix = random_prefix if random_prefix is not None else _random_prefix()
        if len(prefix) != 16:
            raise ValueError("the random prefix is 16 bytes")
        plain = prefix + struct.pack(">I", len(body)) + body + self.appid.encode("ascii")
        encryptor = self._cipher().encryptor()
        data = encryptor.update(pkcs7_pad(plain)) + encryptor.finalize()
        return base64.b64encode(data).decode("ascii")

    def decrypt(self, encrypt: str) -> bytes:
        """The XML bytes inside ``encrypt``; raises ``CryptoError`` on any inconsistency."""
        try:
            data = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CryptoError(CryptoError.BASE64_DECODE, "Encrypt is not Base64") from exc
        if not data or len(data) % 16:
            raise CryptoError(CryptoError.DECRYPT, "ciphertext is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = pkcs7_unpad(decryptor.update(data) + decryptor.finalize())
        if len(plain) < 20:
            raise CryptoError(CryptoError.ILLEGAL_BUFFER, "plaintext too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise CryptoError(CryptoError.ILLEGAL_BUFFER, "declared length exceeds the data")
        xml = plain[20 : 20 + length]
        appid = plain[20 + length :]
        if not hmac.compare_digest(appid, self.appid.encode("ascii")):
            raise CryptoError(CryptoError.APPID_MISMATCH, "AppID does not match")
        return xml

    def check_and_decrypt(
        self, *, timestamp: str, nonce: str, encrypt: str, signature: str | None
    ) -> bytes:
        if not check_msg_signature(self.token, timestamp, nonce, encrypt, signature):
            raise CryptoError(CryptoError.SIGNATURE, "msg_signature does not match")
        return self.decrypt(encrypt)

    def encrypt_reply(
        self, xml: bytes | str, *, timestamp: str, nonce: str, random_prefix: bytes | None = None
    ) -> str:
        """The encrypted reply envelope (Encrypt, MsgSignature, TimeStamp, Nonce)."""
        encrypt = self.encrypt(xml, random_prefix=random_prefix)
        signature = msg_signature(self.token, timestamp, nonce, encrypt)
        return (
            f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{escape(timestamp)}</TimeStamp>"
            f"<Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )


def _random_prefix() -> bytes:
    # The official samples use 16 random letters/digits; any 16 bytes decrypt the same.
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return bytes(alphabet[b % len(alphabet)] for b in os.urandom(16))
