"""Write ``docs/his-bridge.openapi.json`` from the demo HIS's bridge routes.

    python -m frontdesk.sims.his_sim.openapi [path]

A test compares the file with what this produces, so the published file stays current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from frontdesk.his import protocol as p
from frontdesk.his import signing

DOC_PATH = Path(__file__).resolve().parents[4] / "docs" / "his-bridge.openapi.json"

DESCRIPTION = f"""The HIS bridge protocol, version {p.VERSION}: how the Frontdesk front server
talks to a hospital's HIS. Read docs/his-bridge.md first.

Every request carries `{signing.HEADER_KEY_ID}`, `{signing.HEADER_TIMESTAMP}` (unix seconds),
`{signing.HEADER_NONCE}` and `{signing.HEADER_SIGNATURE}`: the lower-case hex HMAC-SHA256,
under the key's secret, of
`{signing.ALGORITHM}\\nMETHOD\\npath\\ncanonical query\\ntimestamp\\nnonce\\nhex SHA-256 of body`.
Requests outside a {signing.WINDOW_SECONDS}-second window or reusing a nonce are refused.
Every write carries `{signing.HEADER_IDEMPOTENCY_KEY}`; repeating it returns the first result.
Every refusal is the error envelope `{{code, message, retryable}}`."""


def bridge_openapi() -> dict[str, Any]:
    from frontdesk.sims.his_sim.app import bridge_router

    routes = [r for r in bridge_router().routes if isinstance(r, APIRoute)]
    document = get_openapi(
        title="Frontdesk HIS bridge", version=p.VERSION, description=DESCRIPTION, routes=routes
    )
    for path_item in document["paths"].values():
        for operation in path_item.values():
            operation["parameters"] = [
                *operation.get("parameters", []),
                *(
                    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                    for name in (
                        signing.HEADER_KEY_ID,
                        signing.HEADER_TIMESTAMP,
                        signing.HEADER_NONCE,
                        signing.HEADER_SIGNATURE,
                    )
                ),
            ]
    return document


def render() -> str:
    return json.dumps(bridge_openapi(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
