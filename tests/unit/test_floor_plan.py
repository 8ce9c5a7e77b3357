"""The floor plan of ``docs/architecture.md``, checked on the source (read-only, no imports run).

- Every module of ``gateway/`` and ``models/`` sits on a floor (:data:`FLOORS`, bottom first) and
  imports only from its own floor or below; nothing imports in a circle, module by module or
  room by room (a room: a package of ``gateway/``, or a top-level module).
- ``gateway`` imports ``simulators`` only in the demo command.
- No file under ``gateway/`` outside the site agent is over 500 lines, and no function over 80.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import
keeps start-up fast, it does not make a dependency go away.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom first, as in docs/architecture.md, "Floors". A module belongs to the floor of the longest
# prefix that names it (a prefix ending in "_" names the modules that start with it; "gateway"
# names the package's __init__ only).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("models",),  # 0 state
    (  # 1 kernel
        "gateway",
        "gateway.errors",
        "gateway.clock",
        "gateway.backoff",
        "gateway.process",
        "gateway.events",
        "gateway.event_priority",
        "gateway.feasibility",
        "gateway.accounting",
        "gateway.baselines",
        "gateway.maintenance_window",
        "gateway.http_edge",
        "gateway.sites.records",
        "gateway.sites.fields",
        "gateway.sites.tls",
    ),
    (  # 2 decisions
        "gateway.planner",
        "gateway.migration.deadlines",
        "gateway.migration.reconcile",
    ),
    ("gateway.settings", "gateway.settings_", "gateway.db", "gateway.startup"),  # 3
    (  # 4 edges
        "gateway.ven",
        "gateway.sites",
        "gateway.reports",
        "gateway.maintenance",
        "gateway.web",
        "gateway.baseline_forecast",
    ),
    ("gateway.fleet", "gateway.migration"),  # 5 orchestration
    ("gateway.daemon", "gateway.agent", "gateway.evaluation", "gateway.training"),  # 6 programs
    ("simulators",),  # 7 simulated worlds
    ("gateway.commands", "gateway.cli"),  # 8 commands
)
DEMO_COMMAND = "gateway.commands.demo"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(*packages: str) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = _module_name(path)
            found[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return found


MODULES = _modules("gateway", "models")


def _imported(module: Module) -> Iterator[str]:
    """Every module name ``module`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    is_package = module.path.name == "__init__.py"
    package = module.name if is_package else module.name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def _edges(universe: dict[str, Module]) -> dict[str, set[str]]:
    return {
        name: {t for t in _imported(module) if t in universe and t != name}
        for name, module in universe.items()
    }


def floor_of(name: str) -> int:
    best: tuple[int, int] | None = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            exact = name == prefix or (prefix != "gateway" and name.startswith(prefix + "."))
            partial = prefix.endswith("_") and name.startswith(prefix)
            if (exact or partial) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    if best is None:
        raise AssertionError(f"{name} is on no floor: add it to FLOORS and docs/architecture.md")
    return best[0]


def room_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "models" or len(parts) == 1:
        return parts[0]
    if (ROOT / parts[0] / parts[1]).is_dir():
        return ".".join(parts[:2])
    return name


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_floor() -> None:
    for name in MODULES:
        floor_of(name)


def test_imports_go_down_or_along() -> None:
    upward = [
        f"{name} (floor {floor_of(name)}) imports {target} (floor {floor_of(target)})"
        for name, targets in _edges(MODULES).items()
        for target in sorted(targets)
        if floor_of(target) > floor_of(name)
    ]
    assert upward == []


def test_no_module_imports_in_a_circle() -> None:
    assert _cycles(_edges(MODULES)) == []


def test_no_room_imports_in_a_circle() -> None:
    rooms: dict[str, set[str]] = {}
    for name, targets in _edges(MODULES).items():
        room = room_of(name)
        rooms.setdefault(room, set()).update(
            room_of(t) for t in targets if room_of(t) != room and room_of(t) != "gateway"
        )
    assert _cycles(rooms) == []


def test_gateway_imports_simulators_only_in_the_demo_command() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, module in MODULES.items()
        if name.startswith("gateway") and name != DEMO_COMMAND
        for target in _imported(module)
        if target == "simulators" or target.startswith("simulators.")
    )
    assert offenders == []


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_file_over_the_limit_outside_the_site_agent() -> None:
    too_long = {
        str(m.path.relative_to(ROOT)): len(m.path.read_text().splitlines())
        for m in MODULES.values()
        if m.name.startswith("gateway") and not m.name.startswith("gateway.agent")
    }
    assert {path: n for path, n in too_long.items() if n > MAX_FILE_LINES} == {}


def test_no_function_over_the_limit() -> None:
    too_long = {
        f"{m.path.relative_to(ROOT)}:{f.lineno} {f.name}": (f.end_lineno or f.lineno) - f.lineno + 1
        for m in MODULES.values()
        if m.name.startswith("gateway")
        for f in _functions(m.tree)
    }
    assert {where: n for where, n in too_long.items() if n > MAX_FUNCTION_LINES} == {}


def test_the_checks_catch_what_they_look_for() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert floor_of("gateway.settings_sites") == floor_of("gateway.settings")
    assert floor_of("gateway.sites.records") < floor_of("gateway.sites.client")
    assert floor_of("gateway.ven.client") > floor_of("gateway.planner.signals")
    assert floor_of("gateway.commands.report") == len(FLOORS) - 1
    assert room_of("gateway.ven.client") == "gateway.ven"
    assert room_of("gateway.fleet") == "gateway.fleet"
