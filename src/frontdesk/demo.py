"""``frontdesk demo``: the whole system on one machine, on SQLite, seeded, in one process.

It runs, each on its own loopback port and each a real HTTP service:

- the front server (web app + a worker) on ``--port`` (8000),
- the demo HIS (``his-sim``, its own SQLite file, seeded with a hospital) on 8101,
- the WeChat simulator (platform, WeChat Pay and the phone page) on 8102,
- the SMS simulator on 8103,

and points the front server's real adapters at them, exactly as production points them at
the hospital's bridge agent, WeChat and the SMS provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from frontdesk.container import build_container
from frontdesk.core import migrate
from frontdesk.core.logging import configure_logging
from frontdesk.core.settings import Settings
from frontdesk.core.worker import Worker, load_job_modules
from frontdesk.web.app import create_app

log = logging.getLogger("frontdesk.demo")

DEMO_ADMIN = "admin"
DEMO_ADMIN_PASSWORD = "demo-admin-password"  # noqa: S105 - printed for the demo, SQLite only


@dataclass(frozen=True)
class DemoPorts:
    web: int = 8000
    his: int = 8101
    wechat: int = 8102
    sms: int = 8103


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the demo (several share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def demo_settings(settings: Settings, *, host: str, ports: DemoPorts, keys_dir: Path) -> Settings:
    """The settings that wire the front server to the local simulators."""
    from frontdesk.wechat.pay.devkeys import FILES, ensure_keyset

    keys = ensure_keyset(keys_dir)
    web = f"http://{host}:{ports.web}"
    wechat = f"http://{host}:{ports.wechat}"
    return settings.model_copy(
        update={
            "public_base_url": web,
            "his_base_url": f"http://{host}:{ports.his}",
            "sms_api_base": f"http://{host}:{ports.sms}",
            "wechat_api_base": wechat,
            "wechat_oauth_authorize_url": f"{wechat}/connect/oauth2/authorize",
            "wechat_sim_phone_origin": wechat,
            "wechatpay_api_base": wechat,
            "wechatpay_mchid": keys.mchid,
            "wechatpay_appid": settings.wechat_appid,
            "wechatpay_serial_no": keys.merchant_serial_no,
            "wechatpay_private_key_path": str(keys_dir / FILES["merchant_key"]),
            "wechatpay_apiv3_key": type(settings.wechatpay_apiv3_key)(keys.apiv3_key),
            "wechatpay_platform_mode": "public_key",
            "wechatpay_platform_public_key": str(keys_dir / FILES["platform_public"]),
            "wechatpay_platform_public_key_id": keys.platform_public_key_id,
            "wechatpay_notify_url": f"{web}/wechat/pay/notify",
            "wechatpay_sim_keys_dir": str(keys_dir),
        }
    )


def build_sims(
    settings: Settings, *, host: str, ports: DemoPorts, keys_dir: Path, his_database_url: str
) -> dict[str, Any]:
    """The three simulators as ASGI apps, configured to match ``settings``."""
    from frontdesk.sims.his_sim.app import create_his_sim_app
    from frontdesk.sims.sms_sim import create_sms_sim_app
    from frontdesk.sims.wechat_sim import pay as pay_sim
    from frontdesk.sims.wechat_sim.app import create_sim_app
    from frontdesk.sims.wechat_sim.pay_state import PaySim, PaySimConfig
    from frontdesk.sims.wechat_sim.platform import SimConfig
    from frontdesk.wechat.pay.devkeys import ensure_keyset

    web = settings.public_base_url
    wechat_app = create_sim_app(
        SimConfig(
            appid=settings.wechat_appid,
            appsecret=settings.wechat_appsecret.get_secret_value(),
            token=settings.wechat_token.get_secret_value(),
            encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
            callback_url=f"{web}/wechat/callback",
            front_base_url=web,
            callback_mode=settings.wechat_callback_mode,
            auto_deliver_events=True,
            sms_inbox_base=settings.sms_api_base,
        )
    )
    keys = ensure_keyset(keys_dir)
    pay_sim.install(
        wechat_app,
        PaySim(
            PaySimConfig(
                mchid=keys.mchid,
                appids=frozenset({keys.appid, settings.wechat_appid}),
                merchant_serial_no=keys.merchant_serial_no,
                merchant_public_key=keys.merchant_public_key,
                platform_key=keys.platform_key,
                platform_public_key_id=keys.platform_public_key_id,
                apiv3_key=keys.apiv3_key,
                public_base=settings.wechatpay_api_base,
                time_scale=settings.wechatpay_sim_time_scale,
                background=True,
            )
        ),
    )
    his_app = create_his_sim_app(
        database_url=his_database_url,
        seed=1,
        size="small",
        key_id=settings.his_key_id,
        secret=settings.his_secret.get_secret_value(),
        front_base_url=settings.public_base_url,
    )
    sms_app = create_sms_sim_app(
        access_key_id=settings.sms_access_key_id,
        access_key_secret=settings.sms_access_key_secret.get_secret_value(),
    )
    return {"his": his_app, "wechat": wechat_app, "sms": sms_app}


async def ensure_demo_admin(container: Any) -> str | None:
    """Create the demo's admin (once); returns its TOTP secret when it was created now."""
    from frontdesk.console import service as console
    from frontdesk.console.errors import UsernameTaken
    from frontdesk.core.clock import now

    try:
        async with container.db.session() as session:
            created = await console.create_staff(
                session,
                username=DEMO_ADMIN,
                display_name="演示管理员",
                role="admin",
                password=DEMO_ADMIN_PASSWORD,
                now=now(),
                actor="demo",
            )
    except UsernameTaken:
        return None
    return created.totp_secret


async def push_menu_when_up(container: Any, *, attempts: int = 100) -> bool:
    """Create the account's menu on the WeChat simulator once it answers (as an operator
    would run ``frontdesk wechat push-menu`` after configuring the real account)."""
    from frontdesk.wechat.oa.menu import push_menu
    from frontdesk.wechat.oa.port import WeChatError

    for _ in range(attempts):
        try:
            await push_menu(
                settings=container.settings,
                platform=container.services["wechat"],
                tokens=container.services["wechat_tokens"],
            )
        except (WeChatError, OSError):
            await asyncio.sleep(0.2)
            continue
        return True
    log.warning("demo: the WeChat simulator did not take the menu")
    return False


async def run_demo(
    settings: Settings,
    *,
    host: str,
    port: int,
    ports: DemoPorts | None = None,
    var_dir: Path = Path("var"),
) -> None:
    configure_logging(level=settings.log_level, json_lines=False)
    ports = ports or DemoPorts(web=port)
    settings = demo_settings(settings, host=host, ports=ports, keys_dir=var_dir / "keys")
    load_job_modules(settings.worker_job_modules)
    container = build_container(settings)
    await migrate.upgrade(container.db.engine)
    totp_secret = await ensure_demo_admin(container)
    sims = build_sims(
        settings,
        host=host,
        ports=ports,
        keys_dir=var_dir / "keys",
        his_database_url=f"sqlite+aiosqlite:///{var_dir / 'his-sim.db'}",
    )
    web_app = create_app(settings, container=container)
    # The front page points a first-time visitor at every part of the demo.
    web_app.state.home_links = [
        {
            "href": f"http://{host}:{ports.wechat}/phone",
            "label": "患者手机（微信模拟器） · the patient's phone",
        },
        {"href": "/console/", "label": "工作人员后台 · staff console"},
        {
            "href": f"http://{host}:{ports.his}/operator",
            "label": "演示 HIS 操作台 · demo HIS operator page",
        },
        *web_app.state.home_links,
    ]
    apps = {
        "web": (web_app, ports.web),
        "his": (sims["his"], ports.his),
        "wechat": (sims["wechat"], ports.wechat),
        "sms": (sims["sms"], ports.sms),
    }
    servers = [
        _Server(
            uvicorn.Config(app, host=host, port=p, log_config=None, access_log=False, lifespan="on")
        )
        for app, p in apps.values()
    ]
    worker = Worker(container, worker_id="demo-worker")

    def stop() -> None:
        for server in servers:
            server.should_exit = True
        worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)

    web = f"http://{host}:{ports.web}"
    lines = [
        f"Frontdesk demo: {web}/  (ready: {web}/readyz)",
        f"  patient phone (WeChat simulator): http://{host}:{ports.wechat}/phone",
        f"  staff console: {web}/console/  user {DEMO_ADMIN} / {DEMO_ADMIN_PASSWORD}",
        f"  demo HIS operator page: http://{host}:{ports.his}/operator",
        f"  SMS inbox: http://{host}:{ports.sms}/sim/inbox?phone=<number>",
    ]
    if totp_secret:
        lines.append(
            f"  console second factor (TOTP secret, shown once): {totp_secret}"
            f"  — or run: {sys.executable} -m frontdesk staff totp-code {totp_secret}"
        )
    print("\n".join(lines), flush=True)
    worker_task = asyncio.create_task(worker.run_forever())
    menu_task = asyncio.create_task(push_menu_when_up(container))
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        stop()
        menu_task.cancel()
        await worker_task
        from frontdesk.sims.wechat_sim import pay as pay_sim

        sim = getattr(sims["wechat"].state, "wechat_pay_sim", None)
        if sim is not None:
            await pay_sim.stop_background(sim)
        await container.aclose()
