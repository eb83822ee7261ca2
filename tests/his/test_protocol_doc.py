"""The published protocol files are current and cover every operation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from frontdesk.his import protocol as p
from frontdesk.sims.his_sim import openapi

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_openapi_file_is_current() -> None:
    published = (DOCS / "his-bridge.openapi.json").read_text(encoding="utf-8")
    assert published == openapi.render(), (
        "docs/his-bridge.openapi.json is stale: run python -m frontdesk.sims.his_sim.openapi"
    )


def test_the_openapi_file_has_exactly_the_operations_of_the_protocol() -> None:
    document = json.loads((DOCS / "his-bridge.openapi.json").read_text(encoding="utf-8"))
    published = {
        (method.upper(), path, item["operationId"])
        for path, methods in document["paths"].items()
        for method, item in methods.items()
    }
    assert published == {(op.method, op.path, op.name) for op in p.OPERATIONS}


def test_the_protocol_document_describes_every_operation() -> None:
    text = (DOCS / "his-bridge.md").read_text(encoding="utf-8")
    for op in p.OPERATIONS:
        pattern = re.escape(f"`{op.method} {op.path}") + r"[`?\[]"
        assert re.search(pattern, text), op.name
