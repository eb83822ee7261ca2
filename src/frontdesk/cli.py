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
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
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


@app.command()
def serve(host: HostOpt = "127.0.0.1", port: PortOpt = 8000,
          workers: Annotated[int, typer.Option(help="Uvicorn worker processes.", min=1)] = 1,
          ) -> None:
    """Serve the web app: WeChat callback, pay notify, patient pages, API, staff console."""
    import uvicorn

    load_settings()  # fail fast, in this process, with a clear message
    uvicorn.run("frontdesk.web.factory:app_from_env", factory=True, host=host, port=port,
                workers=workers, proxy_headers=True, log_config=None, access_log=False)


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


@app.command()
def demo(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Everything on SQLite in one process, seeded, for a first look; prints the URL."""
    from frontdesk.demo import run_demo

    settings = load_settings()
    if not settings.is_sqlite:
        typer.echo("frontdesk demo runs on SQLite; unset FRONTDESK_DATABASE_URL", err=True)
        raise typer.Exit(2)
    asyncio.run(run_demo(settings, host=host, port=port))


@app.command("his-sim")
def his_sim(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8101,
    seed: Annotated[int, typer.Option(help="Seed of the generated hospital.")] = 1,
    size: Annotated[str, typer.Option(help="small | medium | large")] = "small",
    database_url: Annotated[str, typer.Option(help="The demo HIS's own database.")] = (
        "sqlite+aiosqlite:///./var/his-sim.db"),
    reset: Annotated[bool, typer.Option(help="Re-seed even if the database has data.")] = False,
) -> None:
    """Run the demo HIS (server side of the HIS bridge, operator page at /operator)."""
    import uvicorn

    from frontdesk.core.logging import configure_logging
    from frontdesk.sims.his_sim.app import create_his_sim_app

    settings = load_settings()
    configure_logging(level=settings.log_level, json_lines=settings.json_logs)
    try:
        sim = create_his_sim_app(database_url=database_url, seed=seed, size=size,
                                 key_id=settings.his_key_id,
                                 secret=settings.his_secret.get_secret_value(), reset=reset)
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
) -> None:
    """Check a HIS bridge implementation against the protocol; exit 1 on any failure."""
    import httpx

    from frontdesk.his.conformance import Target, check_and_report

    target = Target(key_id=key_id, secret=secret, card_no=card_no, holder_name=holder_name,
                    last4=last4)

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
