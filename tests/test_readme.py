"""The README documents every setting and keeps exactly two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

from frontdesk.core.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    names = [f"FRONTDESK_{name.upper()}" for name in Settings.model_fields]
    assert [name for name in names if f"`{name}`" not in README] == []


def test_two_setup_commands() -> None:
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    block = re.search(r"```\n(.*?)```", setup, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
