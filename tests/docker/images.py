"""Test images built from local files only (no registry): a `FROM scratch` image holding Debian's
busybox-static (`sh` and every applet are busybox), a page to serve and a CGI script. Built through the
engine's API from a tar context whose SHA-256 names the tag, so one build serves the whole session.

`busybox httpd -f -p 127.0.0.1:$PORT -h /www` serves /www on the host network; /cgi-bin/env prints the
environment the container got.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
from pathlib import Path

import aiodocker

BUSYBOX = Path("/bin/busybox")
INDEX_PAGE = b"hello from a managed service\n"
ENV_CGI = b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nbusybox env\n"
HTTPD_COMMAND = ["sh", "-c", "exec busybox httpd -f -vv -p 127.0.0.1:$PORT -h /www"]
# Doubles a shell string until the container's memory limit stops it.
HOG_COMMAND = ["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"]
DOCKERFILE = (
    b'FROM scratch\nADD rootfs.tar /\nCMD ["busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"]\n'
)


def _add(
    tar: tarfile.TarFile, name: str, data: bytes | None = None, *, mode: int = 0o644, link: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.mode = mode
    if link:
        info.type = tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _static_busybox() -> bytes:
    """Debian's busybox-static: a `FROM scratch` image has no C library, so a dynamic busybox won't run."""
    data = BUSYBOX.read_bytes() if BUSYBOX.exists() else b""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise RuntimeError(f"{BUSYBOX} is not a 64-bit ELF; run `apt-get install busybox-static`")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if p_type == 3:  # PT_INTERP: it needs a dynamic loader
            raise RuntimeError(f"{BUSYBOX} is dynamically linked; run `apt-get install busybox-static`")
    return data


def rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "bin", mode=0o755)
        _add(tar, "bin/busybox", _static_busybox(), mode=0o755)
        _add(tar, "bin/sh", link="busybox")
        _add(tar, "tmp", mode=0o1777)
        _add(tar, "www", mode=0o755)
        _add(tar, "www/index.html", INDEX_PAGE)
        _add(tar, "www/cgi-bin", mode=0o755)
        _add(tar, "www/cgi-bin/env", ENV_CGI, mode=0o755)
    return buffer.getvalue()


def write_build_context(directory: Path, dockerfile: bytes = DOCKERFILE) -> Path:
    """A build context on disk (for services that `build`): the Dockerfile and the root filesystem tar."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Dockerfile").write_bytes(dockerfile)
    (directory / "rootfs.tar").write_bytes(rootfs_tar())
    return directory


def _context_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add(tar, "Dockerfile", DOCKERFILE)
        _add(tar, "rootfs.tar", rootfs_tar())
    return buffer.getvalue()


async def ensure_busybox_image(engine_url: str) -> str:
    """The image's tag, building it unless an image of this content is there already."""
    context = _context_tar()
    tag = f"mhp-test/busybox:{hashlib.sha256(context).hexdigest()[:16]}"
    async with aiodocker.Docker(url=engine_url) as docker:
        try:
            await docker.images.inspect(tag)
        except aiodocker.DockerError:
            await docker.images.build(fileobj=io.BytesIO(context), encoding="identity", tag=tag)
    return tag
