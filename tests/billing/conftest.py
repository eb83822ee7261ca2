"""Fixtures of the billing tests: the WeChat, WeChat Pay and demo HIS simulators wired to our
app, and a phone with two cards (the first active) plus a stranger's phone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.billing.helpers import SimPatient, phone_with_cards, sim_patients, wire


@dataclass
class World:
    env: Any
    alice: httpx.AsyncClient
    alice_openid: str
    bob: httpx.AsyncClient
    bob_openid: str
    mine: SimPatient
    family: SimPatient
    stranger: SimPatient


@pytest.fixture
def env(wechat_sim: Any, his_gateway: Any, sms_sender: Any, pay_sim: Any) -> Any:
    return wire(wechat_sim, his_gateway, sms_sender, pay_sim)


@pytest.fixture
async def world(env: Any, his_sim: Any, sms_sim: Any) -> AsyncIterator[World]:
    mine, family, stranger = await sim_patients(his_sim, count=3)
    alice, alice_openid = await phone_with_cards(env, sms_sim, "张三", [mine, family])
    bob, bob_openid = await phone_with_cards(env, sms_sim, "李四", [stranger])
    for openid in (alice_openid, bob_openid):
        assert (await env.sim.user_follows(openid)).ok  # so template messages reach them
    yield World(env, alice, alice_openid, bob, bob_openid, mine, family, stranger)
    await alice.aclose()
    await bob.aclose()
