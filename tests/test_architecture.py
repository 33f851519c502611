"""The module map of STYLE.md, kept true by reading the imports, and the README kept complete."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
import typer.main

from backfill_quality.cli import app

PACKAGE = Path(__file__).resolve().parents[1] / "backfill_quality"
README = Path(__file__).resolve().parents[1] / "README.md"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# library -> the only modules (a trailing "/": every module of that package) allowed to import it
OWNERS = {
    "psycopg": {"db/"},
    "httpx": {"fetching/"},
    "h11": {"fetching/transport.py", "fetching/exchange.py"},
    "PIL": {
        "scoring/imaging.py",
        "scoring/annotate.py",
        "scoring/thumbnail.py",
        "demo/synthetic.py",
        "demo/compose.py",
        "demo/photos.py",
    },
    "onnxruntime": {"scoring/detectors/runtime.py"},
    "rich": {"cli/reporters.py", "cli/views.py", "cli/trend_view.py"},
    "typer": {"cli/"},
    "jinja2": {"report/"},
}
# modules at the bottom of the import graph: they import no other project module but these
FOUNDATION = {
    "errors.py": set(),
    "models.py": set(),
    "config.py": {"errors"},
    "redaction.py": set(),
    "results.py": {"models"},
}
LEAVES = {"config", "models", "errors", "redaction", "results"}
# folder -> the folders it may import (besides the leaves and itself); imports point one way:
# cli -> pipeline -> fetching / scoring / db -> leaves, demo beside the pipeline, and the report
# above the pipeline (it reads checkpoints and fetches thumbnails) but below the cli
LAYERS = {
    "cli": {"pipeline", "fetching", "scoring", "db", "demo", "report"},
    "report": {"pipeline", "fetching", "scoring", "db"},
    "pipeline": {"fetching", "scoring", "db"},
    "demo": {"pipeline", "scoring", "db"},
    "fetching": set(),
    "scoring": set(),
    "db": set(),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_library_has_one_owner(library: str) -> None:
    allowed = OWNERS[library]
    offenders = []
    for path in modules():
        rel = path.relative_to(PACKAGE).as_posix()
        if any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in allowed):
            continue
        if any(name == library or name.startswith(library + ".") for name in imports_of(path)):
            offenders.append(rel)
    assert offenders == [], f"{library} imported outside {sorted(allowed)}"


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_owner_exists(library: str) -> None:
    """A renamed or moved owner must not turn its rule into one that nothing can break."""
    missing = [a for a in OWNERS[library] if not (PACKAGE / a).exists()]
    assert missing == [], f"owners of {library} not found in the package: {missing}"


def test_foundation_modules_import_nothing_above_them() -> None:
    for name, allowed in FOUNDATION.items():
        project = {
            imported.removeprefix("backfill_quality.")
            for imported in imports_of(PACKAGE / name)
            if imported.startswith("backfill_quality.")
        }
        assert project <= allowed, f"{name} imports {project - allowed}"


def project_imports(path: Path) -> set[str]:
    """The project modules `path` imports, as dotted names below backfill_quality."""
    names = set()
    for imported in imports_of(path):
        if imported.startswith("backfill_quality."):
            names.add(imported.removeprefix("backfill_quality."))
    return names


def test_every_module_lives_in_a_folder_or_is_a_leaf() -> None:
    loose = {p.stem for p in PACKAGE.glob("*.py")} - LEAVES - {"__init__", "__main__"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert loose == set(), f"modules outside a folder: {sorted(loose)}"
    assert folders == set(LAYERS), "a folder without a rule in LAYERS"


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_imports_point_one_way(folder: str) -> None:
    allowed = LAYERS[folder] | LEAVES | {folder}
    offenders = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for name in project_imports(path):
            if name.split(".")[0] not in allowed:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


def test_scoring_is_pure() -> None:
    """Bytes in, result out: no module of scoring/ opens a socket, a database or a file."""
    forbidden = {"httpx", "h11", "psycopg", "socket", "asyncio", "subprocess", "typer", "rich"}
    offenders = []
    for path in sorted((PACKAGE / "scoring").rglob("*.py")):
        for name in imports_of(path):
            if name.split(".")[0] in forbidden:
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


def test_only_the_cli_imports_the_cli() -> None:
    for path in modules():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        assert not any(n.startswith("backfill_quality.cli") for n in imports_of(path)), rel


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_every_command_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    names = command_names()
    assert {"run", "score", "status", "migrate", "demo"} <= set(names)
    for name in names:
        assert f"backfill-quality {name}" in readme, f"command {name!r} missing from README.md"


def test_every_run_option_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    group = typer.main.get_command(app)
    run = group.commands["run"]  # type: ignore[attr-defined]
    documented = set(re.findall(r"`(--[a-z-]+)", readme))
    for param in run.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--") and opt != "--help":
                assert opt in documented, f"run option {opt} missing from README.md"


def test_every_subpackage_is_in_the_distribution() -> None:
    """setuptools packs only the packages listed: a missing one installs a broken tool (the
    editable install of the tests would not notice)."""
    listed = set(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("backfill_quality", *init.parent.relative_to(PACKAGE).parts))
        for init in PACKAGE.rglob("__init__.py")
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_every_data_file_of_the_package_is_in_the_distribution() -> None:
    """The report's template is package data: a pattern that misses it installs a tool whose
    `report` cannot find its page (the editable install of the tests would not notice)."""
    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    for template in (PACKAGE / "report" / "templates").iterdir():
        patterns = package_data.get("backfill_quality.report", [])
        shipped = {path for p in patterns for path in (PACKAGE / "report").glob(p)}
        assert template in shipped, f"{template.name} not in package-data"
