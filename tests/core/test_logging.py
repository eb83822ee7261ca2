from __future__ import annotations

import json
import logging

import pytest

from frontdesk.core.logging import configure_logging, request_id_var


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_request_id_and_are_masked(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level="INFO", json_lines=True)
    token = request_id_var.set("req-7")
    try:
        logging.getLogger("frontdesk.test").info("bound card for %s", "320102199001011234")
    finally:
        request_id_var.reset(token)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = json.loads(line)
    assert entry["message"] == "bound card for 3201**********1234"
    assert (entry["level"], entry["logger"], entry["request_id"]) == (
        "INFO",
        "frontdesk.test",
        "req-7",
    )


def test_readable_lines_in_development(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(level="INFO", json_lines=False)
    logging.getLogger("frontdesk.test").warning("phone 13812345678 unreachable")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("WARNING frontdesk.test [-] phone 138****5678 unreachable")
