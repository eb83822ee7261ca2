"""The ``frontdesk`` command: one program for every process of the system."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from frontdesk.core.settings import Settings

app = typer.Typer(
    help="Frontdesk: the hospital's outpatient front server (WeChat, payments, HIS bridge).",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")
wechat_app = typer.Typer(
    help="WeChat Official Account and WeChat Pay commands.", no_args_is_help=True
)
app.add_typer(wechat_app, name="wechat")
staff_app = typer.Typer(help="Staff console accounts.", no_args_is_help=True)
app.add_typer(staff_app, name="staff")

HostOpt = Annotated[str, typer.Option(help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)]


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; on a bad value print one line per setting, exit 2."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            loc = "_".join(str(p) for p in err.get("loc", ())).upper()
            name = f"FRONTDESK_{loc}" if loc else "settings"
            typer.echo(f"frontdesk: {name}: {err.get('msg')}", err=True)
        raise typer.Exit(2) from None


def _install_signal_handlers(stop: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads",
) -> None:
    """Apply the database migrations (creates the SQLite file under ./var if needed)."""
    from frontdesk.core import migrate
    from frontdesk.core.database import create_engine

    settings = load_settings()

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            await migrate.upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo(f"database at {revision}")


@staff_app.command("create")
def staff_create(
    username: Annotated[str, typer.Option(help="Sign-in name: 3-32 of a-z 0-9 . _ -")],
    role: Annotated[
        str, typer.Option(help="customer_service, scheduling, cashier, finance, admin or auditor")
    ],
    display_name: Annotated[str | None, typer.Option(help="Name shown in the console.")] = None,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="Initial password (12+ characters); asked for if not given.",
        ),
    ] = "",
) -> None:
    """Create a staff account and print its TOTP enrolment URI (shown this once only)."""
    from frontdesk.console import service as console
    from frontdesk.console.errors import BadStaffInput, UsernameTaken
    from frontdesk.core.clock import now as clock_now
    from frontdesk.core.database import Database

    settings = load_settings()

    async def run() -> console.NewStaff:
        database = Database(settings.database_url)
        try:
            async with database.session() as session:
                return await console.create_staff(
                    session,
                    username=username,
                    display_name=display_name or username,
                    role=role,
                    password=password,
                    now=clock_now(),
                    actor="cli",
                )
        finally:
            await database.dispose()

    try:
        created = asyncio.run(run())
    except (BadStaffInput, UsernameTaken) as exc:
        typer.echo(f"frontdesk: {exc.code}: {exc.params.get('field')}", err=True)
        raise typer.Exit(2) from None
    uri = console.totp_uri(
        secret=created.totp_secret,
        username=created.staff.username,
        issuer=settings.console_totp_issuer,
    )
    typer.echo(
        f"staff {created.staff.username} created (id {created.staff.id}, role {created.staff.role})"
    )
    typer.echo("Add this to the authenticator app now; it is not shown again:")
    typer.echo(uri)


@app.command()
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.", min=1)] = 1,
) -> None:
    """Serve the web app: WeChat callback, pay notify, patient pages, API, staff console."""
    import uvicorn

    load_settings()  # fail fast, in this process, with a clear message
    uvicorn.run(
        "frontdesk.web.factory:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_config=None,
        access_log=False,
    )


@app.command()
def worker() -> None:
    """Run jobs from the outbox (pushes, HIS writes) and the recurring jobs."""
    from frontdesk.container import build_container
    from frontdesk.core.logging import configure_logging
    from frontdesk.core.worker import Worker, load_job_modules

    settings = load_settings()
    configure_logging(level=settings.log_level, json_lines=settings.json_logs)
    load_job_modules(settings.worker_job_modules)

    async def run() -> None:
        container = build_container(settings)
        runner = Worker(container)
        _install_signal_handlers(runner.stop)
        try:
            await runner.run_forever()
        finally:
            await container.aclose()

    asyncio.run(run())


@app.command("catalog-sync")
def catalog_sync() -> None:
    """Queue a catalog sync now (departments, doctors, schedules, pools) for the worker,
    instead of waiting for the recurring one (every 10 minutes)."""
    from frontdesk.catalog import jobs as catalog_jobs
    from frontdesk.core import outbox
    from frontdesk.core.database import Database

    settings = load_settings()

    async def run() -> None:
        db = Database(settings.database_url, pool_size=1, max_overflow=0)
        try:
            async with db.session() as session:
                await outbox.enqueue(session, catalog_jobs.SYNC_JOB)
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo("catalog sync queued; a running worker will apply it")


@app.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    his_port: Annotated[int, typer.Option(help="Port of the demo HIS.")] = 8101,
    wechat_port: Annotated[int, typer.Option(help="Port of the WeChat simulator.")] = 8102,
    sms_port: Annotated[int, typer.Option(help="Port of the SMS simulator.")] = 8103,
) -> None:
    """Everything on SQLite in one process, seeded, for a first look; prints the URL."""
    from frontdesk.demo import run_demo

    settings = load_settings()
    if not settings.is_sqlite:
        typer.echo("frontdesk demo runs on SQLite; unset FRONTDESK_DATABASE_URL", err=True)
        raise typer.Exit(2)
    from frontdesk.demo import DemoPorts

    ports = DemoPorts(web=port, his=his_port, wechat=wechat_port, sms=sms_port)
    asyncio.run(run_demo(settings, host=host, port=port, ports=ports))


@app.command("config-doc")
def config_doc() -> None:
    """Print every setting as a Markdown table (the source of docs/configuration.md)."""
    from frontdesk.core.settings_doc import render_markdown

    typer.echo(render_markdown(), nl=False)


@staff_app.command("totp-code")
def staff_totp_code(
    secret: Annotated[str, typer.Argument(help="The account's TOTP secret (base32).")],
) -> None:
    """Print the current TOTP code for a secret (for the demo; use an authenticator app)."""
    from frontdesk.console import service as console
    from frontdesk.core.clock import now

    typer.echo(console.totp_code(secret, now()))


@app.command("sms-sim")
def sms_sim(host: HostOpt = "127.0.0.1", port: PortOpt = 8103) -> None:
    """Run the SMS provider simulator (Alibaba Cloud SendSms API, inbox at /sim/inbox)."""
    import uvicorn

    from frontdesk.sims.sms_sim import create_sms_sim_app

    settings = load_settings()
    app_ = create_sms_sim_app(
        access_key_id=settings.sms_access_key_id,
        access_key_secret=settings.sms_access_key_secret.get_secret_value(),
    )
    typer.echo(f"SMS simulator: http://{host}:{port}/  inbox: /sim/inbox?phone=<number>")
    uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False)


@wechat_app.command("push-menu")
def wechat_push_menu() -> None:
    """Create the Official Account's custom menu: the one staff saved in the console, else
    FRONTDESK_WECHAT_MENU."""
    from frontdesk.container import build_container
    from frontdesk.wechat.oa.admin import saved_menu
    from frontdesk.wechat.oa.menu import push_menu
    from frontdesk.wechat.oa.port import WeChatError

    settings = load_settings()

    async def run() -> int:
        container = build_container(settings)
        try:
            async with container.db.session() as session:
                saved = await saved_menu(session)
            menu = await push_menu(
                settings=settings,
                platform=container.services["wechat"],
                tokens=container.services["wechat_tokens"],
                menu=saved.menu if saved else None,
            )
        except WeChatError as exc:
            typer.echo(f"frontdesk: menu refused: errcode {exc.errcode} {exc.errmsg}", err=True)
            return 1
        finally:
            await container.aclose()
        typer.echo(f"menu pushed: {len(menu.get('button', []))} top-level buttons")
        return 0

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)


@app.command("wechat-sim")
def wechat_sim(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8102,
    front: Annotated[
        str, typer.Option(help="The front server's base URL.")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Run the WeChat simulator (platform APIs, callbacks and the phone page)."""
    import uvicorn

    from frontdesk.sims.wechat_sim.app import create_sim_app
    from frontdesk.sims.wechat_sim.platform import SimConfig

    settings = load_settings()
    config = SimConfig(
        appid=settings.wechat_appid,
        appsecret=settings.wechat_appsecret.get_secret_value(),
        token=settings.wechat_token.get_secret_value(),
        encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
        callback_url=front.rstrip("/") + "/wechat/callback",
        front_base_url=front.rstrip("/"),
        callback_mode=settings.wechat_callback_mode,
        auto_deliver_events=True,
    )
    typer.echo(f"WeChat simulator: phone page at http://{host}:{port}/phone")
    uvicorn.run(create_sim_app(config), host=host, port=port, log_config=None, access_log=False)


@wechat_app.command("gen-test-keys")
def wechat_gen_test_keys(
    out: Annotated[str, typer.Option(help="Directory for the key files (git-ignored).")] = (
        "var/keys"
    ),
    force: Annotated[bool, typer.Option(help="Replace keys already there.")] = False,
) -> None:
    """Create throw-away WeChat Pay keys for dev and demo (merchant + simulator platform)."""
    from pathlib import Path

    from frontdesk.wechat.pay.devkeys import FILES, make_keyset, write_keyset

    target = Path(out)
    if (target / FILES["meta"]).exists() and not force:
        typer.echo(f"frontdesk: keys already in {target} (use --force to replace)", err=True)
        raise typer.Exit(1)
    paths = write_keyset(make_keyset(), target)
    typer.echo(f"test keys written to {target}; settings for the front server:")
    typer.echo(paths["env"].read_text().rstrip())


@app.command("his-sim")
def his_sim(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8101,
    seed: Annotated[int, typer.Option(help="Seed of the generated hospital.")] = 1,
    size: Annotated[str, typer.Option(help="small | medium | large")] = "small",
    database_url: Annotated[str, typer.Option(help="The demo HIS's own database.")] = (
        "sqlite+aiosqlite:///./var/his-sim.db"
    ),
    reset: Annotated[bool, typer.Option(help="Re-seed even if the database has data.")] = False,
) -> None:
    """Run the demo HIS (server side of the HIS bridge, operator page at /operator)."""
    import uvicorn

    from frontdesk.core.logging import configure_logging
    from frontdesk.sims.his_sim.app import create_his_sim_app

    settings = load_settings()
    configure_logging(level=settings.log_level, json_lines=settings.json_logs)
    try:
        sim = create_his_sim_app(
            database_url=database_url,
            seed=seed,
            size=size,
            key_id=settings.his_key_id,
            secret=settings.his_secret.get_secret_value(),
            reset=reset,
            front_base_url=settings.public_base_url,
        )
    except ValueError as exc:
        typer.echo(f"frontdesk his-sim: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"demo HIS: http://{host}:{port}/his/v1/  operator: http://{host}:{port}/operator")
    uvicorn.run(sim, host=host, port=port, log_config=None, access_log=False)


@app.command("his-conformance")
def his_conformance(
    url: Annotated[str, typer.Argument(help="Base URL of the HIS bridge under test.")],
    key_id: Annotated[str, typer.Option(help="Key id issued to the front server.")],
    secret: Annotated[str, typer.Option(help="The key's secret.", envvar="HIS_SECRET")],
    card_no: Annotated[str, typer.Option(help="A test card with data.")] = "6100000001",
    holder_name: Annotated[str | None, typer.Option(help="The test card's holder.")] = None,
    last4: Annotated[str | None, typer.Option(help="Last 4 of its ID or phone.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 10.0,
    suspend_schedule_id: Annotated[
        str | None,
        typer.Option(help="A test session the kit may really suspend (else refusals only)."),
    ] = None,
) -> None:
    """Check a HIS bridge implementation against the protocol; exit 1 on any failure."""
    import httpx

    from frontdesk.his.conformance import Target, check_and_report

    target = Target(
        key_id=key_id,
        secret=secret,
        card_no=card_no,
        holder_name=holder_name,
        last4=last4,
        suspend_schedule_id=suspend_schedule_id,
    )

    async def run() -> int:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
            return await check_and_report(client, target, typer.echo)

    code = asyncio.run(run())
    if code:
        raise typer.Exit(code)


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
