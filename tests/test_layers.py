"""The modules import one way: the app (CLI, report, demo) on top; the three stages (the dlt source in
`pipelines/`, the dbt runner, `exports/`) in the middle, none importing another; a small core (the warehouse,
its run log, run lock and markers) underneath, importing nothing of ours. The emulators stand apart: only
the app's demo uses them. Read from the source (every import, those inside functions too), not from what
happens to be loaded."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("moodle_commcare", "pipelines", "exports", "emulators", "dbt_project")

CORE = {"moodle_commcare", "moodle_commcare.warehouse", "moodle_commcare.database", "moodle_commcare.runlog",
        "moodle_commcare.runlock", "moodle_commcare.markers", "moodle_commcare.http_settings",
        "moodle_commcare.findings", "moodle_commcare.postgres", "moodle_commcare.postgres_dlt",
        "moodle_commcare.dialect"}
APP = {"moodle_commcare.cli", "moodle_commcare.report", "moodle_commcare.demo", "moodle_commcare.failures",
       "moodle_commcare.check", "moodle_commcare.sync", "moodle_commcare.notify", "moodle_commcare.jsonlog",
       "moodle_commcare.webhook_events", "moodle_commcare.webhook_batcher", "moodle_commcare.webhook_store",
       "moodle_commcare.webhook_server", "moodle_commcare.migrate"}
TRANSFORM = {"moodle_commcare.transform", "moodle_commcare.site_identity", "dbt_project"}


def group(module: str) -> str:
    """core, app, emulators, or the stage the module belongs to (extract, transform, export)."""
    if module in CORE:
        return "core"
    if module in APP:
        return "app"
    if module in TRANSFORM:
        return "transform"
    top = module.split(".")[0]
    return {"pipelines": "extract", "exports": "export", "emulators": "emulators"}.get(top, f"unplaced:{module}")


ALLOWED = {
    "core": {"core"},
    "extract": {"core", "extract"},
    "transform": {"core", "transform"},
    "export": {"core", "export"},
    "emulators": {"emulators"},
    "app": {"app", "core", "extract", "transform", "export", "emulators"},
}


def modules() -> Dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: Dict[str, Path]) -> Set[str]:
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rsplit(".", 1)[0]
    out: Set[str] = set()

    def first_party(candidate: str) -> Optional[str]:
        while candidate and candidate not in known:
            candidate = candidate.rpartition(".")[0]
        return candidate or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` imports the module; `from pkg import name` the package's __init__
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                resolved = first_party(target)
                if resolved and resolved != name:
                    out.add(resolved)
    return out


GRAPH = {name: imports_of(name, path, modules()) for name, path in modules().items()}


def test_every_module_has_a_place() -> None:
    unplaced = sorted(m for m in GRAPH if group(m).startswith("unplaced"))
    assert not unplaced, f"put these in a layer (tests/test_layers.py): {unplaced}"


def test_no_module_imports_a_higher_layer_or_another_stage() -> None:
    wrong = sorted(f"{m} ({group(m)}) imports {t} ({group(t)})"
                   for m, targets in GRAPH.items() for t in targets if group(t) not in ALLOWED[group(m)])
    assert not wrong, "\n".join(wrong)


def test_the_module_graph_has_no_circle() -> None:
    """Two modules importing each other through any path, a module and its package's __init__ included."""
    state: Dict[str, int] = {}
    stack: List[str] = []
    circles: List[List[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif state.get(nxt) is None:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)
