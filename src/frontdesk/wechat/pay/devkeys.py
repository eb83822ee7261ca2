"""Development and test key material for WeChat Pay: never a real merchant's.

``frontdesk wechat gen-test-keys --out var/keys`` writes a merchant key pair (with a self-signed
"API certificate" whose serial is the merchant serial number), a platform key pair (public key
+ ``PUB_KEY_ID_…`` for public-key mode, and a self-signed platform certificate for certificate
mode), an APIv3 key, and ``wechatpay.env`` with the matching ``FRONTDESK_WECHATPAY_*`` lines.
The simulator reads the same directory. ``var/`` is git-ignored: keys are never committed.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from frontdesk.wechat.pay import signing

DEV_MCHID = "1900000109"
DEV_APPID = "wx0d1e2v3d4e5m6o7a"

FILES = {
    "merchant_key": "merchant_key.pem",
    "merchant_cert": "merchant_cert.pem",
    "platform_key": "platform_key.pem",
    "platform_public": "platform_public.pem",
    "platform_cert": "platform_cert.pem",
    "meta": "wechatpay.json",
    "env": "wechatpay.env",
}


@dataclass(frozen=True)
class KeySet:
    mchid: str
    appid: str
    merchant_key: rsa.RSAPrivateKey
    merchant_cert_pem: bytes
    merchant_serial_no: str
    platform_key: rsa.RSAPrivateKey
    platform_public_key_id: str
    platform_cert_pem: bytes
    platform_cert_serial: str
    apiv3_key: str

    @property
    def merchant_key_pem(self) -> bytes:
        return _private_pem(self.merchant_key)

    @property
    def platform_key_pem(self) -> bytes:
        return _private_pem(self.platform_key)

    @property
    def platform_public_pem(self) -> str:
        return signing.public_key_pem(self.platform_key)

    @property
    def merchant_public_key(self) -> rsa.RSAPublicKey:
        return self.merchant_key.public_key()


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


DEV_CERT_VALID_FROM = datetime(2020, 1, 1, tzinfo=UTC)
DEV_CERT_VALID_UNTIL = datetime(2099, 12, 31, tzinfo=UTC)


def _self_signed(key: rsa.RSAPrivateKey, common_name: str, serial: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        # Fixed, wide validity: the tests run on a frozen clock (2026-11-27), the demo on the
        # real one; a window taken from the wall clock at key generation ("now - 1 day")
        # made certificate-mode tests fail once the wall clock passed the frozen one by a day.
        .not_valid_before(DEV_CERT_VALID_FROM)
        .not_valid_after(DEV_CERT_VALID_UNTIL)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def make_keyset(*, mchid: str = DEV_MCHID, appid: str = DEV_APPID) -> KeySet:
    """Fresh RSA-2048 keys in memory (about a second of CPU)."""
    merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    platform = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    merchant_serial = secrets.randbits(63) | (1 << 62)
    platform_serial = secrets.randbits(63) | (1 << 62)
    alphabet = string.ascii_letters + string.digits
    return KeySet(
        mchid=mchid,
        appid=appid,
        merchant_key=merchant,
        merchant_cert_pem=_self_signed(merchant, f"{mchid} test merchant", merchant_serial),
        merchant_serial_no=format(merchant_serial, "X"),
        platform_key=platform,
        platform_public_key_id="PUB_KEY_ID_"
        + "".join(secrets.choice(string.digits) for _ in range(32)),
        platform_cert_pem=_self_signed(platform, "Test WeChat Pay platform", platform_serial),
        platform_cert_serial=format(platform_serial, "X"),
        apiv3_key="".join(secrets.choice(alphabet) for _ in range(32)),
    )


def write_keyset(keys: KeySet, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / filename for name, filename in FILES.items()}
    paths["merchant_key"].write_bytes(keys.merchant_key_pem)
    paths["merchant_cert"].write_bytes(keys.merchant_cert_pem)
    paths["platform_key"].write_bytes(keys.platform_key_pem)
    paths["platform_public"].write_text(keys.platform_public_pem)
    paths["platform_cert"].write_bytes(keys.platform_cert_pem)
    meta = {
        "mchid": keys.mchid,
        "appid": keys.appid,
        "merchant_serial_no": keys.merchant_serial_no,
        "platform_public_key_id": keys.platform_public_key_id,
        "platform_cert_serial": keys.platform_cert_serial,
        "apiv3_key": keys.apiv3_key,
    }
    paths["meta"].write_text(json.dumps(meta, indent=2) + "\n")
    env = [
        f"FRONTDESK_WECHATPAY_MCHID={keys.mchid}",
        f"FRONTDESK_WECHATPAY_APPID={keys.appid}",
        f"FRONTDESK_WECHATPAY_SERIAL_NO={keys.merchant_serial_no}",
        f"FRONTDESK_WECHATPAY_PRIVATE_KEY_PATH={paths['merchant_key']}",
        f"FRONTDESK_WECHATPAY_APIV3_KEY={keys.apiv3_key}",
        "FRONTDESK_WECHATPAY_PLATFORM_MODE=public_key",
        f"FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY={paths['platform_public']}",
        f"FRONTDESK_WECHATPAY_PLATFORM_PUBLIC_KEY_ID={keys.platform_public_key_id}",
    ]
    paths["env"].write_text("\n".join(env) + "\n")
    for secret in ("merchant_key", "platform_key", "meta", "env"):
        paths[secret].chmod(0o600)
    return paths


def read_keyset(directory: Path) -> KeySet:
    """Load what ``write_keyset`` wrote (the simulator's start-up)."""
    meta = json.loads((directory / FILES["meta"]).read_text())
    return KeySet(
        mchid=meta["mchid"],
        appid=meta["appid"],
        merchant_key=signing.load_private_key((directory / FILES["merchant_key"]).read_bytes()),
        merchant_cert_pem=(directory / FILES["merchant_cert"]).read_bytes(),
        merchant_serial_no=meta["merchant_serial_no"],
        platform_key=signing.load_private_key((directory / FILES["platform_key"]).read_bytes()),
        platform_public_key_id=meta["platform_public_key_id"],
        platform_cert_pem=(directory / FILES["platform_cert"]).read_bytes(),
        platform_cert_serial=meta["platform_cert_serial"],
        apiv3_key=meta["apiv3_key"],
    )


def ensure_keyset(directory: Path) -> KeySet:
    """Read the keys in ``directory``, generating them on first use (dev and demo only)."""
    if (directory / FILES["meta"]).exists():
        return read_keyset(directory)
    keys = make_keyset()
    write_keyset(keys, directory)
    return keys
