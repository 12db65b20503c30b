"""The import rules of the architecture: api -> core -> platform, protocol shared by all.

- `kleene_protocol` imports nothing of the daemon or the CLI;
- `klee` (the CLI) imports nothing of the daemon;
- `kleened.core` never imports `kleened.api`, nor a concrete platform driver (only the
  interfaces in `platform.base` and the POSIX path helpers in `platform.posix.rootpath`);
- `kleened.api` never imports `kleened.platform`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE_MAY_USE = {"kleened.platform", "kleened.platform.base", "kleened.platform.posix",
                "kleened.platform.posix.rootpath"}


def imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    module_parts = package.split(".")
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module_parts[: len(module_parts) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def modules(top: Path, prefix: str):
    for path in top.rglob("*.py"):
        rel = path.relative_to(top).with_suffix("")
        parts = [prefix, *rel.parts]
        package = ".".join(parts if rel.name == "__init__" else parts[:-1])
        yield path, package


def violations(top: Path, prefix: str, forbidden) -> list[str]:
    found = []
    for path, package in modules(top, prefix):
        for name in imports(path, package):
            if forbidden(name):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_protocol_imports_neither_daemon_nor_cli():
    assert violations(ROOT / "protocol/kleene_protocol", "kleene_protocol",
                      lambda n: n.split(".")[0] in ("kleened", "klee")) == []


def test_cli_imports_nothing_of_the_daemon():
    assert violations(ROOT / "client/klee", "klee", lambda n: n.split(".")[0] == "kleened") == []


def test_core_imports_no_api_and_no_concrete_driver():
    def forbidden(name: str) -> bool:
        if name.startswith("kleened.api"):
            return True
        return name.startswith("kleened.platform") and name not in CORE_MAY_USE

    assert violations(ROOT / "daemon/kleened/core", "kleened.core", forbidden) == []


def test_api_never_touches_the_platform():
    assert violations(ROOT / "daemon/kleened/api", "kleened.api", lambda n: n.startswith("kleened.platform")) == []


def test_platform_never_imports_core_or_api():
    assert violations(ROOT / "daemon/kleened/platform", "kleened.platform",
                      lambda n: n.startswith(("kleened.core", "kleened.api"))) == []


def test_backends_share_only_posix_code():
    """platform/freebsd and platform/posix never import platform/linux, except the process
    streams (`linux.process`, listed in docs/freebsd.md as still to move); posix imports
    neither backend."""
    allowed = {"kleened.platform.linux.process"}
    freebsd = violations(ROOT / "daemon/kleened/platform/freebsd", "kleened.platform.freebsd",
                         lambda n: n.startswith("kleened.platform.linux") and n not in allowed)
    posix = violations(ROOT / "daemon/kleened/platform/posix", "kleened.platform.posix",
                       lambda n: n.startswith(("kleened.platform.linux", "kleened.platform.freebsd")))
    assert freebsd + posix == []


def test_core_never_branches_on_a_driver_name():
    """Drivers say what they can do with capabilities or a ValueError (platform/base.py)."""
    core = modules(ROOT / "daemon/kleened/core", "kleened.core")
    found = [f"{path.relative_to(ROOT)}:{line}" for path, _package in core
             for line in driver_comparisons(path.read_text())]
    assert found == []
    assert driver_comparisons('if storage.driver != "zfs":\n    pass\n') == [1]  # the check itself works


def driver_comparisons(source: str) -> list[int]:
    """Lines comparing something's `.driver` (a storage or runtime driver name) to anything."""
    compares = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Compare)]
    return [node.lineno for node in compares
            if any(isinstance(side, ast.Attribute) and side.attr == "driver"
                   for side in [node.left, *node.comparators])]
