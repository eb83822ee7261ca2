"""Import rules that keep the layout honest (see CONVENTIONS.md).

- Domains (and core) never import web frameworks, templates, presentation or simulators;
  a domain's presentation lives in modules named ``routes`` (or ``*_routes``).
- A domain uses another domain only through its ``service``, ``schemas``, ``errors`` or
  ``port`` modules, never its models or repository (no reaching into another's tables).
- ``core`` depends on no domain.
- Nothing outside tests imports ``frontdesk.sims`` except the CLI and the demo wiring.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "frontdesk"
DOMAINS = {
    "accounts",
    "catalog",
    "booking",
    "billing",
    "reports",
    "messaging",
    "reconciliation",
    "his",
    "wechat",
}
PRESENTATION_PREFIXES = (
    "fastapi",
    "starlette",
    "jinja2",
    "frontdesk.web",
    "frontdesk.console",
    "frontdesk.sims",
)
# What a domain may use of another: its rules, its data shapes, its errors, and for the
# outside-world packages their ports, event registries and the template-message sender.
PUBLIC_MODULES = {"service", "schemas", "errors", "port", "events", "templates"}
SIM_IMPORTERS = {"cli.py", "demo.py"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules_imported(path: Path) -> list[str]:
    """Dotted names of the modules ``path`` imports (``from a.b import c`` gives ``a.b.c``
    when ``c`` is itself a module of ours, else ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                rel = Path(*dotted.split(".")[1:])
                is_module = (SRC / rel).with_suffix(".py").exists() or (SRC / rel).is_dir()
                found.append(
                    dotted if dotted.startswith("frontdesk.") and is_module else node.module
                )
    return found


def _is_presentation_module(path: Path) -> bool:
    return path.stem == "routes" or path.stem.endswith("_routes") or "routes" in path.parts


def _modules() -> list[tuple[Path, tuple[str, ...]]]:
    return [(p, p.relative_to(SRC).parts) for p in sorted(SRC.rglob("*.py"))]


def test_domains_and_core_do_not_import_presentation() -> None:
    offences = []
    for path, parts in _modules():
        area = parts[0]
        if area not in DOMAINS | {"core"} or _is_presentation_module(path):
            continue
        for name in _imports(path):
            if name.startswith(PRESENTATION_PREFIXES):
                offences.append(f"{'/'.join(parts)} imports {name}")
    assert offences == []


def test_domains_use_each_other_only_through_public_modules() -> None:
    offences = []
    for path, parts in _modules():
        area = parts[0]
        if area not in DOMAINS:
            continue
        for name in _modules_imported(path):
            bits = name.split(".")
            if len(bits) < 3 or bits[0] != "frontdesk" or bits[1] == area:
                continue
            if bits[1] in DOMAINS and bits[-1] not in PUBLIC_MODULES:
                # his/ and wechat/ are ports: their adapters stay behind the port.
                offences.append(f"{'/'.join(parts)} imports {name}")
    assert offences == []


def test_core_depends_on_no_domain() -> None:
    offences = [
        f"{'/'.join(parts)} imports {name}"
        for path, parts in _modules()
        if parts[0] == "core"
        for name in _imports(path)
        if name.split(".")[:2][-1] in DOMAINS and name.startswith("frontdesk.")
    ]
    assert offences == []


def test_simulators_are_not_imported_by_production_code() -> None:
    offences = [
        f"{'/'.join(parts)} imports {name}"
        for path, parts in _modules()
        if parts[0] != "sims" and "/".join(parts) not in SIM_IMPORTERS
        for name in _imports(path)
        if name.startswith("frontdesk.sims")
    ]
    assert offences == []


def test_the_rules_can_fail(tmp_path: Path) -> None:
    """The checker itself: a module that breaks the rule is found."""
    bad = tmp_path / "service.py"
    bad.write_text("from fastapi import Request\nfrom frontdesk.billing.models import X\n")
    names = _imports(bad)
    assert "fastapi.Request" in names
    assert any(n.startswith(PRESENTATION_PREFIXES) for n in names)
    assert "frontdesk.billing.models" in names
