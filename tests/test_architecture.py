"""The package's layers (docs/architecture.md), checked on every module's imports.

A module may import modules of its own layer or of a layer below, never one
above; and no two modules import each other, directly or through others.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import portal

PACKAGE = Path(portal.__file__).resolve().parent

# Lowest first. A module's layer is that of its longest matching prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("portal.errors", "portal.settings"),  # the vocabulary every layer shares
    # PostgreSQL, Redis, pub/sub, limits, secrets at rest; background jobs and the outbox
    ("portal.stores", "portal.jobs"),
    ("portal.web", "portal.obs", "portal.wechat"),  # HTTP plumbing, observability, WeChat's API
    ("portal.tenants", "portal.audit"),  # pools, clients, admins, signing keys, audit trail
    # the features
    (
        "portal.scan",
        "portal.oidc",
        "portal.console",
        "portal.webhooks",
        "portal.mgmt",
        "portal.privacy",
    ),
    (
        "portal.app",
        "portal.asgi",
        "portal.cli",
        "portal.local",
        "portal.dev",
        "portal.worker",
        "portal.__main__",
    ),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    module_name(p): p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__"
}


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return rank


def imports(module: str) -> set[str]:
    """The portal modules ``module`` imports (a package's __init__ for ``from pkg import mod``
    counts as the module itself)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("portal"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("portal."))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{module}: relative import; the codebase uses absolute ones")
    found.discard(module)
    return {m for m in found if m != "portal"}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_point_down():
    upward = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in sorted(GRAPH.items())
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_checks_see_a_cycle_and_an_upward_import():
    # The rules above would pass on an empty graph: make sure they read real imports.
    assert "portal.stores.events" in GRAPH["portal.tenants.pools"]
    assert "portal.dev.server" in GRAPH["portal.cli"]  # a lazy import, inside a function
    assert layer_of("portal.web.hosts") < layer_of("portal.tenants.pools")
