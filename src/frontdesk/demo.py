"""``frontdesk demo``: the web app and a worker in one process on SQLite, for a first look.

Later issues add the demo HIS and the WeChat simulator here, each on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvicorn

from frontdesk.container import build_container
from frontdesk.core import migrate
from frontdesk.core.logging import configure_logging
from frontdesk.core.settings import Settings
from frontdesk.core.worker import Worker, load_job_modules
from frontdesk.web.app import create_app


async def run_demo(settings: Settings, *, host: str, port: int) -> None:
    configure_logging(level=settings.log_level, json_lines=False)
    load_job_modules(settings.worker_job_modules)
    container = build_container(settings)
    await migrate.upgrade(container.db.engine)
    app = create_app(settings, container=container)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    )
    worker = Worker(container, worker_id="demo-worker")
    # uvicorn installs its own signal handlers; stop the worker when the server stops.
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        server.handle_exit(sig, None)
        worker.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop, sig)
    print(
        f"Frontdesk demo: http://{host}:{port}/  (ready: http://{host}:{port}/readyz)", flush=True
    )
    worker_task = asyncio.create_task(worker.run_forever())
    try:
        await server.serve()
    finally:
        worker.stop()
        await worker_task
        await container.aclose()
