"""The house's walls, drawn from the imports: the kit (``agent``) and the server
(``provisioning``) stand side by side on the shared floor (``kitsys``, ``kitlink``); neither
imports the other, and the floor imports neither (docs/architecture.md)."""

from __future__ import annotations

import ast
import contextlib
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

IMPORT_ALL = """
import importlib, pkgutil, sys
package = importlib.import_module({package!r})
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    # alembic scripts run against a database on import; __main__ runs the program
    if ".migrations" not in module.name and not module.name.endswith(".__main__"):
        importlib.import_module(module.name)
leaked = sorted(name for name in sys.modules if name.split(".")[0] in {forbidden!r})
assert not leaked, leaked
print("ok")
"""


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("agent", {"provisioning"}),
        ("provisioning", {"agent"}),
        ("kitlink", {"agent", "provisioning"}),
        ("kitsys", {"agent", "provisioning", "kitlink"}),
    ],
)
def test_a_package_and_all_its_modules_import_without(package: str, forbidden: set[str]) -> None:
    """Every module is imported in a fresh interpreter: what it pulls in, however indirectly."""
    code = IMPORT_ALL.format(package=package, forbidden=forbidden)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


ROOT = Path(__file__).resolve().parent.parent
WALLS = {
    "agent": {"provisioning"},
    "provisioning": {"agent"},
    "kitlink": {"agent", "provisioning"},
    "kitsys": {"agent", "provisioning", "kitlink"},
}


def absolute_imports(package: str) -> Iterator[tuple[Path, int, str]]:
    """(file, line, module) of every absolute import statement in ``package``'s source."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from ((path, node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.lineno, node.module


@pytest.mark.parametrize("package", sorted(WALLS))
def test_no_import_statement_crosses_a_wall(package: str) -> None:
    """The source itself, lazy imports inside functions included (which importing every module
    does not run)."""
    crossings = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path, line, name in absolute_imports(package)
        if name.split(".")[0] in WALLS[package]
    ]
    assert not crossings, crossings


def _requirement_names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def _with_dependencies(names: set[str]) -> set[str]:
    """The distributions ``names`` pull in, transitively (as installed here)."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):
            todo += _requirement_names(
                [r for r in metadata.requires(name) or [] if "extra ==" not in r]
            )
    return seen


@pytest.mark.parametrize(("package", "extra"), [("agent", "kit"), ("provisioning", "server")])
def test_each_side_needs_only_its_own_extra(package: str, extra: str) -> None:
    """What the kit's and the server's code import is installed by the base dependencies plus
    their own extra (pyproject.toml): a kit needs no database layer, a server no media stack."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"][extra]
    allowed = _with_dependencies(_requirement_names(declared))
    providers = metadata.packages_distributions()
    ours = set(WALLS) | {"kiosk"}
    missing = set()
    for path, _line, name in absolute_imports(package):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ours:
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(top, [top])}
        if not dists & allowed:
            missing.add(f"{path.relative_to(ROOT)}: {top}")
    assert not missing, sorted(missing)
