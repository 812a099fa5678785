"""The packaging files agree with each other: pyproject.toml vs uv.lock vs pixi.toml, the justfile vs pixi
tasks, and shared.config.Settings vs .env.example. Each of these drifts silently when someone edits one side
only. (Bootstrap's `uv sync --locked` and `just lint`'s `uv lock --check` catch a stale lock too; the test
here says which requirement differs, offline.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_NAME = "mcp-http-proxy"
# Recipes that only exist for `just` itself: pixi manages its environment, and lists tasks on its own.
JUST_ONLY_RECIPES = {"default", "bootstrap"}
# Recipes that must run without bootstrap: `lock` repairs the stale lock that bootstrap's sync refuses.
NO_BOOTSTRAP_RECIPES = {"lock"}


def _toml(name: str) -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / name).read_text())


def _pyproject_requirements(entries: list[str]) -> dict[str, frozenset[str]]:
    requirements = [Requirement(entry) for entry in entries]
    return {canonicalize_name(req.name): frozenset(req.extras) for req in requirements}


def _pixi_requirements(table: dict[str, Any]) -> dict[str, frozenset[str]]:
    result: dict[str, frozenset[str]] = {}
    for name, spec in table.items():
        if canonicalize_name(name) == PROJECT_NAME:
            continue  # the project itself, installed editable; not a dependency
        extras = spec.get("extras", []) if isinstance(spec, dict) else []
        result[canonicalize_name(name)] = frozenset(extras)
    return result


def _just_binary() -> str:
    beside_python = Path(sys.executable).parent / "just"
    found = str(beside_python) if beside_python.exists() else shutil.which("just")
    if found is None:
        pytest.fail("`just` is not installed (it is in the dev extra: pip install rust-just)")
    return found


def _justfile_recipes() -> dict[str, Any]:
    dump = subprocess.run(
        [_just_binary(), "--justfile", str(REPO_ROOT / "justfile"), "--dump", "--dump-format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    recipes: dict[str, Any] = json.loads(dump.stdout)["recipes"]
    return recipes


def test_pixi_declares_the_same_runtime_dependencies_as_pyproject() -> None:
    pyproject = _pyproject_requirements(_toml("pyproject.toml")["project"]["dependencies"])
    pixi = _pixi_requirements(_toml("pixi.toml")["pypi-dependencies"])
    only_pyproject = sorted(set(pyproject) - set(pixi))
    only_pixi = sorted(set(pixi) - set(pyproject))
    assert set(pixi) == set(pyproject), f"only in pyproject: {only_pyproject}; only in pixi: {only_pixi}"
    assert pixi == pyproject, "extras differ (e.g. python-jose[cryptography])"


def test_pixi_dev_feature_matches_the_dev_extra() -> None:
    pyproject = _pyproject_requirements(_toml("pyproject.toml")["project"]["optional-dependencies"]["dev"])
    pixi = _pixi_requirements(_toml("pixi.toml")["feature"]["dev"]["pypi-dependencies"])
    assert pixi == pyproject


def _lock() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "uv.lock").read_text())


def _locked_versions() -> dict[str, str]:
    return {canonicalize_name(p["name"]): p["version"] for p in _lock()["package"] if "version" in p}


def _locked_project() -> dict[str, Any]:
    return next(p for p in _lock()["package"] if p["name"] == PROJECT_NAME)


def _specifiers(entries: list[str]) -> dict[str, tuple[frozenset[str], str]]:
    requirements = [Requirement(entry) for entry in entries]
    return {canonicalize_name(r.name): (frozenset(r.extras), str(r.specifier)) for r in requirements}


def _locked_specifiers(extra: str | None) -> dict[str, tuple[frozenset[str], str]]:
    out: dict[str, tuple[frozenset[str], str]] = {}
    for item in _locked_project()["metadata"]["requires-dist"]:
        if item.get("marker", "") != (f"extra == '{extra}'" if extra else ""):
            continue
        spec = str(Requirement(f"x{item.get('specifier', '')}").specifier)
        out[canonicalize_name(item["name"])] = (frozenset(item.get("extras", [])), spec)
    return out


def test_the_lock_was_resolved_from_this_pyproject() -> None:
    project = _toml("pyproject.toml")["project"]
    assert _locked_specifiers(None) == _specifiers(project["dependencies"]), "run `just lock`"
    assert _locked_specifiers("dev") == _specifiers(project["optional-dependencies"]["dev"]), (
        "run `just lock`"
    )


def test_pixi_pins_every_pypi_dependency_to_the_locked_version() -> None:
    locked = _locked_versions()
    pixi = _toml("pixi.toml")
    tables = [pixi["pypi-dependencies"], pixi["feature"]["dev"]["pypi-dependencies"]]
    for table in tables:
        for name, spec in table.items():
            if canonicalize_name(name) == PROJECT_NAME:
                continue
            version = spec["version"] if isinstance(spec, dict) else spec
            want = locked[canonicalize_name(name)]
            assert version == f"=={want}", f"pixi.toml pins {name} {version}, uv.lock has {want}: just lock"


def test_pixi_tasks_cover_every_justfile_recipe() -> None:
    recipes = set(_justfile_recipes()) - JUST_ONLY_RECIPES
    tasks = set(_toml("pixi.toml")["tasks"])
    assert recipes <= tasks, f"justfile recipes without a pixi task: {sorted(recipes - tasks)}"


def test_the_justfile_has_the_recipes_the_readme_promises() -> None:
    expected = {
        "up",
        "down",
        "logs",
        "test",
        "test-proxy",
        "test-auth",
        "test-certificates",
        "test-docker",
        "lint",
        "redis-cli",
        "bench",
        "fmt",
        "lock",
    }
    assert expected <= set(_justfile_recipes())


def test_every_recipe_bootstraps_the_venv_first() -> None:
    for name, recipe in _justfile_recipes().items():
        if name in JUST_ONLY_RECIPES or name in NO_BOOTSTRAP_RECIPES:
            continue
        dependencies = [dep["recipe"] for dep in recipe["dependencies"]]
        assert dependencies[:1] == ["bootstrap"], f"recipe {name!r} does not run bootstrap first"


def test_pytest_markers_of_the_marker_recipes_are_declared() -> None:
    markers = _toml("pyproject.toml")["tool"]["pytest"]["ini_options"]["markers"]
    declared = {line.split(":", 1)[0] for line in markers}
    for marker in ("proxy", "auth", "certificates", "docker"):
        assert marker in declared


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate((REPO_ROOT / ".env.example").read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", stripped)
        assert match, f".env.example line {number} is not NAME=value: {line!r}"
        name, value = match.groups()
        assert name not in values, f"{name} appears twice in .env.example"
        values[name] = value
    return values


def test_env_example_documents_exactly_the_settings() -> None:
    documented = set(_env_example())
    fields = set(Settings.model_fields)
    assert documented == fields, (
        f"undocumented settings: {sorted(fields - documented)}; "
        f"documented but not settings: {sorted(documented - fields)}"
    )


def test_env_example_shows_the_real_defaults() -> None:
    documented = _env_example()
    for name, field in Settings.model_fields.items():
        shown = documented.get(name)
        assert shown == str(field.default), (
            f"{name}: .env.example says {shown!r}, default is {field.default!r}"
        )


def test_every_env_example_variable_has_a_comment() -> None:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"[A-Z][A-Z0-9_]*=", line):
            name = line.split("=", 1)[0]
            assert index > 0 and lines[index - 1].startswith("# "), f"{name} has no comment above it"


def _referenced_scripts_and_modules(text: str) -> tuple[set[str], set[str]]:
    scripts = set(re.findall(r"(deploy/local/[\w.-]+\.sh)", text))
    modules = set(re.findall(r"-m ([a-z_][\w.]*)", text))
    return scripts, modules


@pytest.mark.parametrize("manifest", ["justfile", "pixi.toml"])
def test_recipes_and_tasks_point_at_things_that_exist(manifest: str) -> None:
    scripts, modules = _referenced_scripts_and_modules((REPO_ROOT / manifest).read_text())
    assert scripts and modules, f"expected {manifest} to run scripts and modules"
    for script in scripts:
        assert (REPO_ROOT / script).is_file(), f"{manifest} runs {script}, which does not exist"
    for module in modules:
        assert importlib.util.find_spec(module) is not None, (
            f"{manifest} runs -m {module}, which is not importable"
        )
