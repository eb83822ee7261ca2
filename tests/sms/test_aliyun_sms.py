from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from frontdesk.sims.sms_sim import create_sms_sim_app
from frontdesk.sms.aliyun import AliyunSms, sign
from frontdesk.sms.port import SmsRejected, SmsUnavailable

KEY_ID, SECRET = "test-key-id", "test-key-secret"


def test_signature_matches_the_providers_published_example() -> None:
    # The worked example of Alibaba Cloud's signature documentation.
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert sign(params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


@pytest.fixture
def sim() -> FastAPI:
    return create_sms_sim_app(access_key_id=KEY_ID, access_key_secret=SECRET)


def _adapter(app: FastAPI, *, secret: str = SECRET) -> AliyunSms:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return AliyunSms(
        base_url="http://sms.sim",
        access_key_id=KEY_ID,
        access_key_secret=secret,
        sign_name="南京市第二医院",
        template_code="SMS_100001",
        client=client,
    )


async def _inbox(app: FastAPI, phone: str) -> list[dict[str, str]]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sms.sim"
    ) as c:
        data: list[dict[str, str]] = (await c.get("/sim/inbox", params={"phone": phone})).json()
        return data


async def test_code_reaches_the_phones_inbox(sim: FastAPI) -> None:
    receipt = await _adapter(sim).send_code(phone="13812345678", code="482913")
    assert receipt.provider_id.endswith("^0")
    [message] = await _inbox(sim, "13812345678")
    assert message["text"] == "【南京市第二医院】您的验证码为482913，5分钟内有效，请勿泄露。"


async def test_wrong_secret_is_refused_and_nothing_is_sent(sim: FastAPI) -> None:
    with pytest.raises(SmsRejected) as exc:
        await _adapter(sim, secret="forged").send_code(phone="13812345678", code="1")
    assert exc.value.code == "SignatureDoesNotMatch"
    assert await _inbox(sim, "13812345678") == []


async def test_one_message_per_number_per_minute(sim: FastAPI) -> None:
    adapter = _adapter(sim)
    await adapter.send_code(phone="13812345678", code="111111")
    with pytest.raises(SmsRejected) as exc:
        await adapter.send_code(phone="13812345678", code="222222")
    assert exc.value.code == "isv.BUSINESS_LIMIT_CONTROL"
    assert len(await _inbox(sim, "13812345678")) == 1


async def test_bad_number_is_refused(sim: FastAPI) -> None:
    with pytest.raises(SmsRejected) as exc:
        await _adapter(sim).send_code(phone="12345", code="1")
    assert exc.value.code == "isv.MOBILE_NUMBER_ILLEGAL"


async def test_replayed_and_stale_requests_are_refused(sim: FastAPI) -> None:
    adapter = _adapter(sim)
    params = adapter.signed_params(phone="13900000000", code="9", nonce="n-1")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim), base_url="http://sms.sim"
    ) as c:
        assert (await c.get("/", params=params)).json()["Code"] == "OK"
        assert (await c.get("/", params=params)).json()["Code"] == "SignatureNonceUsed"
        old = adapter.signed_params(
            phone="13900000001", code="9", at=datetime.now(UTC) - timedelta(minutes=20)
        )
        assert (await c.get("/", params=old)).json()["Code"] == "InvalidTimeStamp.Expired"
    assert await _inbox(sim, "13900000001") == []


async def test_provider_trouble_is_unavailable(sim: FastAPI) -> None:
    sim.state.sim.fail_next = "isp.SYSTEM_ERROR"
    with pytest.raises(SmsUnavailable):
        await _adapter(sim).send_code(phone="13812345678", code="1")

    broken = FastAPI()

    @broken.get("/")
    async def garbage() -> str:
        return "not the provider's json"

    with pytest.raises(SmsUnavailable, match="malformed"):
        await _adapter(broken).send_code(phone="13812345678", code="1")

    down = FastAPI()

    @down.get("/")
    async def boom() -> None:
        raise RuntimeError("down")

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=down, raise_app_exceptions=False))
    adapter = AliyunSms(
        base_url="http://sms.sim",
        access_key_id=KEY_ID,
        access_key_secret=SECRET,
        sign_name="x",
        template_code="y",
        client=client,
    )
    with pytest.raises(SmsUnavailable, match="500"):
        await adapter.send_code(phone="13812345678", code="1")
