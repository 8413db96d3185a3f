"""The import arrows of docs/architecture.md, checked on the source so that a new module keeps them."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metrics_pipeline"
SOURCE_FOLDERS = ("cloudwatch", "whatap", "host", "ingestion_logs", "rollups", "sla", "alerts")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("lib"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lib_imports_neither_dagster_nor_defs_nor_the_harness(path):
    bad = {n for n in _imports(path)
           if n.split(".")[0] == "dagster" or n.startswith(("metrics_pipeline.defs", "metrics_pipeline.dev"))}
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("defs"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_defs_never_imports_the_harness(path):
    bad = {n for n in _imports(path) if n.startswith("metrics_pipeline.dev")}
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_warehouse_core_imports_no_source_or_derived_domain():
    core = [*_modules("lib/warehouse"), *(PACKAGE / "lib" / f for f in ("points.py", "landing.py", "settings.py",
                                                                          "yaml_config.py", "markdown.py"))]
    for path in core:
        bad = {n for n in _imports(path) if any(n.startswith(f"metrics_pipeline.lib.{d}") for d in SOURCE_FOLDERS)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_loading_the_code_location_imports_no_development_dependency():
    code = ("import sys, metrics_pipeline.definitions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'pgserver', 'hypothesis', 'pytest') "
            "or m.startswith('metrics_pipeline.dev')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
