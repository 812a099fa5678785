"""Pin pixi.toml's PyPI dependencies to the versions uv.lock resolved (`just lock` runs this after `uv lock`).

uv.lock is the one lock file: `just up`, `just test` and CI install from it. pixi keeps its own lock, so the
way to make a pixi environment run the same program is to pin every direct dependency in pixi.toml to the
exact version uv.lock chose. This rewrites only the version strings of the two PyPI tables (comments, order
and extras stay); tests/test_packaging.py fails when a pin and the lock disagree.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPI_TABLES = ("[pypi-dependencies]", "[feature.dev.pypi-dependencies]")


def canonicalize_name(name: str) -> str:
    """PEP 503 normalised name (no `packaging` import: this runs in a venv that may hold only uv)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock_path: Path) -> dict[str, str]:
    with lock_path.open("rb") as lock:
        packages = tomllib.load(lock)["package"]
    return {canonicalize_name(p["name"]): p["version"] for p in packages if "version" in p}


_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?P<eq>\s*=\s*)(?P<spec>.*)$")


def pinned(text: str, versions: dict[str, str]) -> str:
    """pixi.toml text with the version of every PyPI dependency (but the project itself) set from the lock."""
    out: list[str] = []
    table = ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped
        match = _ENTRY.match(line.rstrip("\n"))
        if table in PYPI_TABLES and match and not stripped.startswith("#"):
            name = canonicalize_name(match["name"])
            spec = match["spec"]
            if name in versions and "path" not in spec:
                pin = f'"=={versions[name]}"'
                if spec.startswith("{"):
                    spec = re.sub(r'version\s*=\s*"[^"]*"', f"version = {pin}", spec)
                else:
                    spec = pin
                line = f"{match['name']}{match['eq']}{spec}\n"
        out.append(line)
    return "".join(out)


def main() -> int:
    versions = locked_versions(REPO_ROOT / "uv.lock")
    path = REPO_ROOT / "pixi.toml"
    before = path.read_text()
    after = pinned(before, versions)
    if after != before:
        path.write_text(after)
        print("pixi.toml: PyPI pins updated from uv.lock")
    else:
        print("pixi.toml: PyPI pins already match uv.lock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
