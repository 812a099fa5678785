"""Make sure the programs the benchmark drives are installed (Debian packages), installing them when root.

The benchmark runs each binary directly as a foreground child with a generated config; the packages' system
services are never used. Installing nginx or caddy on a systemd machine would otherwise start a system service
on port 80 (where `just up` puts our own data plane), so during our install a policy-rc.d forbids service
starts, and the services of the packages we installed are disabled afterwards. When a program is missing and
we are not root, we print the one apt-get line that fixes it and the run stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# packages whose postinst enables and starts a system service
SERVICE_OF_PACKAGE = {"nginx": "nginx", "caddy": "caddy", "haproxy": "haproxy"}

# binary -> Debian package that ships it
PACKAGE_OF_BINARY: dict[str, str] = {
    "nginx": "nginx",
    "caddy": "caddy",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "taskset": "util-linux",
    "redis-server": "redis-server",
}


class MissingPrerequisite(RuntimeError):
    """A program is missing and could not be installed; the message is the one-line fix."""


def missing_binaries(binaries: Iterable[str]) -> list[str]:
    return [name for name in binaries if shutil.which(name) is None]


def install_command(binaries: Iterable[str]) -> list[str]:
    packages = sorted({PACKAGE_OF_BINARY[name] for name in binaries})
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def ensure_binaries(binaries: Iterable[str], *, log: Callable[[str], None] = print) -> None:
    """Install whatever is missing when we are root; otherwise raise with the command to run."""
    wanted = list(dict.fromkeys(binaries))
    missing = missing_binaries(wanted)
    if not missing:
        return
    command = install_command(missing)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingPrerequisite(f"missing {', '.join(missing)}; install with: sudo {' '.join(command)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    packages = command[4:]
    log(f"installing {' '.join(packages)} (apt-get) ...")
    with services_not_started():
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            # A fresh machine often has no package lists yet; refresh once and retry.
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    disable_services([SERVICE_OF_PACKAGE[p] for p in packages if p in SERVICE_OF_PACKAGE], log)
    still_missing = missing_binaries(wanted)
    if result.returncode != 0 or still_missing:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-5:])
        raise MissingPrerequisite(
            f"could not install {', '.join(still_missing or missing)} ({' '.join(command)} exited "
            f"{result.returncode}):\n{tail}"
        )


@contextlib.contextmanager
def services_not_started() -> Iterator[None]:
    """Deny service starts (policy-rc.d exit 101) while we install, unless a policy is already in place."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text(
        "#!/bin/sh\n# written by tests/bench while it installs packages; removed after\nexit 101\n"
    )
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def disable_services(services: list[str], log: Callable[[str], None]) -> None:
    """Packages we just installed must not leave services running or enabled (only under systemd)."""
    if not services or not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return
    subprocess.run(["systemctl", "disable", "--now", *services], capture_output=True, check=False)
    log(
        f"disabled the system services {', '.join(services)} that the packages installed (bench runs its own)"
    )
