"""The README keeps exactly two set-up commands; docs/configuration.md documents every
setting and is what ``frontdesk config-doc`` generates from the code."""

from __future__ import annotations

import re
from pathlib import Path

from frontdesk.core.settings import Settings
from frontdesk.core.settings_doc import render_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_with_a_meaning() -> None:
    rows = dict(
        re.findall(r"^\| `(FRONTDESK_[A-Z0-9_]+)` \| [^|]* \| (.*) \|$", CONFIGURATION, re.M)
    )
    names = [f"FRONTDESK_{name.upper()}" for name in Settings.model_fields]
    assert [n for n in names if n not in rows] == []
    assert [n for n in names if not rows[n].strip()] == []


def test_configuration_doc_is_current() -> None:
    assert render_markdown() == CONFIGURATION, "run: frontdesk config-doc > docs/configuration.md"


def test_two_setup_commands() -> None:
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    block = re.search(r"```\n(.*?)```", setup, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
