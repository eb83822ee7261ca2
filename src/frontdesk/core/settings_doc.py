"""Render every setting as a Markdown table (``docs/configuration.md``).

Descriptions come from the settings module's own comments (the comment block above a field
or the comment at the end of its line) and group headers (``# --- name ---``), so the
documentation is written once, next to the code, and a test keeps the file current.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from pydantic import SecretStr

from frontdesk.core.settings import Settings

_SOURCE = Path(__file__).resolve().parent / "settings.py"
_FIELD = re.compile(r"^    ([a-z_][a-z0-9_]*)\s*:")
_GROUP = re.compile(r"^    # --- (.+?) -*$")


def _comments() -> tuple[dict[str, str], dict[str, str]]:
    """(description per field, group per field) from the source's comments."""
    lines = _SOURCE.read_text(encoding="utf-8").splitlines()
    trailing: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
        if tok.type == tokenize.COMMENT and tok.line.strip() != tok.string.strip():
            trailing[tok.start[0] - 1] = tok.string.lstrip("# ").strip()
    descriptions: dict[str, str] = {}
    groups: dict[str, str] = {}
    group = "general"
    pending: list[str] = []
    in_class = False
    for number, line in enumerate(lines):
        if line.startswith("class Settings("):
            in_class = True
            continue
        if not in_class:
            continue
        if match := _GROUP.match(line):
            group, pending = match.group(1), []
            continue
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# ").strip())
            continue
        if match := _FIELD.match(line):
            name = match.group(1)
            text = " ".join([*pending, trailing.get(number, "")]).strip()
            descriptions[name] = text
            groups[name] = group
        if stripped and not stripped.startswith("#"):
            pending = []
    return descriptions, groups


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "(see settings.py)"
    value = field.default
    if isinstance(value, SecretStr):
        return "(demo value)" if value.get_secret_value() else "(empty)"
    if value is None:
        return "(unset)"
    text = str(value.value if hasattr(value, "value") else value)
    return f"`{text}`" if text else "(empty)"


def render_markdown() -> str:
    descriptions, groups = _comments()
    out = [
        "# Configuration",
        "",
        "Every setting is read from the environment (or a `.env` file) with the `FRONTDESK_`",
        "prefix; lists and mappings are JSON. Generated from `src/frontdesk/core/settings.py`",
        "by `frontdesk config-doc > docs/configuration.md`; a test keeps this file current.",
        "Production (`FRONTDESK_ENV=production`) refuses SQLite, simulators, loopback",
        "endpoints and every demo secret, naming the setting to change.",
        "",
    ]
    current = None
    for name in Settings.model_fields:
        group = groups.get(name, "general")
        if group != current:
            out += ["", f"## {group}", "", "| setting | default | meaning |", "| --- | --- | --- |"]
            current = group
        meaning = descriptions.get(name, "").replace("|", "\\|")
        out.append(f"| `FRONTDESK_{name.upper()}` | {_default(name)} | {meaning} |")
    return "\n".join(out) + "\n"
