"""Every third-party package the library imports is declared in pyproject.toml.

A package that only arrives as another package's dependency (pyproj through geopandas, once a
runtime dependency) breaks `make demo` as soon as that other package moves to an extra.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: imported lazily only where they are needed: Ray (the `ray` extra) and psutil (the server
#: helper the tests and benchmarks use; the `bench` extra)
OPTIONAL = {"ray", "psutil"}


def _imported_top_level_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "src" / "sbe").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    private = {n for n in names if n.startswith("_")}  # _typeshed: type checking only
    return names - set(sys.stdlib_module_names) - private - {"sbe"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normalise(re.split(r"[<>=\[; ]", d, maxsplit=1)[0]) for d in project["dependencies"]
    }
    dists = packages_distributions()
    missing = {}
    for name in sorted(_imported_top_level_names()):
        if name in OPTIONAL:
            continue
        owners = {_normalise(d) for d in dists.get(name, [name])}
        if not owners & declared:
            missing[name] = sorted(owners)
    assert not missing, f"imported by src/sbe but not in [project] dependencies: {missing}"
