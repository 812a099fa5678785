"""Which image a service runs: references and the admin's allowlist, and build contexts under the build root.

Pure rules plus the (blocking) reading of a build context; the controller runs the engine calls.

- A reference is normalised as Docker does (`python:3.12` is `docker.io/library/python:3.12`), and so is
  every allowlist entry, which names a registry (`ghcr.io`, `localhost:5000/`), a namespace (`ghcr.io/acme`,
  `docker.io/acme/`) or a repository (`python`); any tag or digest of a listed repository is allowed. A
  trailing `/` says "everything under this" where Docker's own reading would differ (`docker.io/acme` alone
  is the repository docker.io/library/acme).
- A build context is a directory under DOCKER_BUILD_ROOT (an ordinary token's: under
  DOCKER_BUILD_ROOT/<token name>/), checked after resolving symlinks. It is sent as a tar made without
  following symlinks (a link inside the context is sent as a link, never as the file it points at), with
  fixed owners and times, so that its SHA-256 names the image: `mhp-build/<service>:<digest>`. An unchanged
  context is not built twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from shared.config import split_csv

DEFAULT_REGISTRY = "docker.io"
BUILD_REPOSITORY = "mhp-build"


class BuildContextRefused(Exception):
    """The build context may not be used (outside the root, missing, too large); `detail` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BuildContextOutside(BuildContextRefused):
    """The context (or building at all) is not this principal's to use."""


@dataclass(frozen=True, slots=True)
class ImageName:
    registry: str
    path: str  # "" for a whole registry (allowlist entries only)

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.path}" if self.path else self.registry


def _split_registry(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    if not sep and ("." in first or first == "localhost"):
        return first, ""  # a bare registry (allowlist entries)
    return DEFAULT_REGISTRY, text


def image_name(reference: str) -> ImageName:
    """The repository of a reference, without tag or digest, normalised as Docker does."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    registry, path = _split_registry(name.lower())
    if registry == DEFAULT_REGISTRY and path and "/" not in path:
        path = f"library/{path}"
    return ImageName(registry, path)


def _entry_repository(entry: str) -> str:
    """An allowlist entry as a repository prefix. A trailing `/` marks a registry or namespace, which is how
    a registry with a port is written (`localhost:5000/`; without the slash it would read as a tag)."""
    if entry.endswith("/"):
        text = entry.rstrip("/").lower()
        first = text.split("/", 1)[0]
        if "." in first or ":" in first or first == "localhost":
            return text
        return f"{DEFAULT_REGISTRY}/{text}"
    return image_name(entry).repository


def allowlist_refusal(reference: str, allowlist: str) -> str | None:
    """Why an ordinary token may not run `reference`, or None when DOCKER_IMAGE_ALLOWLIST allows it."""
    repository = image_name(reference).repository
    for entry in split_csv(allowlist):
        allowed = _entry_repository(entry)
        if repository == allowed or repository.startswith(allowed + "/"):
            return None
    if not split_csv(allowlist):
        return (
            "ordinary tokens may run only images they build: the admin allows none (DOCKER_IMAGE_ALLOWLIST)"
        )
    return (
        f"image {reference!r} ({repository}) is not in the admin's allowlist (DOCKER_IMAGE_ALLOWLIST: "
        f"{', '.join(split_csv(allowlist))})"
    )


def build_base(build_root: str, owner: str, *, is_admin: bool) -> Path:
    """The directory a principal's build contexts must lie under."""
    if not build_root:
        raise BuildContextOutside("building images is off: the admin has not set DOCKER_BUILD_ROOT")
    root = Path(build_root).resolve()
    return root if is_admin else root / owner


def resolve_context(base: Path, context: str, dockerfile: str) -> Path:
    """The context directory (symlinks resolved), refused unless it lies under `base` and holds the
    Dockerfile."""
    candidate = Path(context)
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise BuildContextOutside(
            f"build context {context!r} is outside the build root allowed here ({base})"
        )
    if not resolved.is_dir():
        raise BuildContextRefused(f"build context {context!r} is not a directory")
    docker_file = (resolved / dockerfile).resolve()
    if resolved not in docker_file.parents:
        raise BuildContextOutside(f"dockerfile {dockerfile!r} is outside the build context")
    if not docker_file.is_file():
        raise BuildContextRefused(f"no {dockerfile!r} in the build context {context!r}")
    return resolved


def context_tar(directory: Path, *, max_bytes: int) -> bytes:
    """A deterministic tar of the directory: sorted, owner 0, mtime 0, symlinks kept as links."""
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(directory, followlinks=False):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = Path(root, name)
                relative = path.relative_to(directory).as_posix()
                info = tarfile.TarInfo(relative)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                mode = path.lstat()
                info.mode = stat.S_IMODE(mode.st_mode)
                if stat.S_ISLNK(mode.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(path)
                    tar.addfile(info)
                elif stat.S_ISDIR(mode.st_mode):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif stat.S_ISREG(mode.st_mode):
                    data = _read_regular_file(path)
                    total += len(data)
                    if total > max_bytes:
                        raise BuildContextRefused(
                            f"the build context is larger than DOCKER_BUILD_MAX_CONTEXT_BYTES ({max_bytes} "
                            "bytes)"
                        )
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                # sockets, fifos and devices are not part of a build context
    return buffer.getvalue()


def _read_regular_file(path: Path) -> bytes:
    # O_NOFOLLOW: a file swapped for a symlink after the walk is refused, never followed out of the root.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise BuildContextRefused(f"{path.name} changed while the build context was read")
        return handle.read()


def build_tag(service: str, context: bytes, dockerfile: str, args: dict[str, str]) -> str:
    """The content-addressed tag of a build: the same context, Dockerfile name and args give the same tag."""
    digest = hashlib.sha256(context)
    digest.update(json.dumps({"dockerfile": dockerfile, "args": args}, sort_keys=True).encode())
    return f"{BUILD_REPOSITORY}/{service}:{digest.hexdigest()[:20]}"
