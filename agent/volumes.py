"""Pod volumes as files for the process runtime: the kubelet's atomic writer and "mounts" as symlinks.

A configMap / secret / downwardAPI / projected volume is a directory laid out as the kubelet's atomic
writer lays it out: the files live in a timestamped directory ``..<stamp>``, ``..data`` is a symlink
to it, and every top-level name is a symlink through ``..data``; an update writes a new timestamped
directory and swaps ``..data`` with one ``rename`` so a reader sees the old set or the new set, never
a mix. ``emptyDir`` is a plain directory. The process runtime has no mount namespace, so a
``volumeMount`` is a symlink at ``mountPath`` (``subPath``: at the path inside the volume) under the
pod's mount root: ``/`` on an instance (one pod per instance, the agent runs as root), or
``<--mount-root>/<pod uid>`` when the agent is given a root (tests, the simulator), whose path the
container sees in ``VKEC2_MOUNT_ROOT``. Stdlib only (it runs on the instance); nothing in the
standard library writes this layout, hence the plumbing here.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.model import FailedPrecondition, InvalidArgument

DATA_LINK = "..data"


@dataclass(frozen=True)
class VolumeFile:
    path: str
    data: bytes
    mode: int


def parse_files(raw: Any, where: str) -> tuple[VolumeFile, ...]:
    """The files of one resolved volume (``[{path, data (base64), mode}]``), checked."""
    if not isinstance(raw, list):
        raise InvalidArgument(f"{where} must be a list of files")
    out: list[VolumeFile] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise InvalidArgument(f"{where}: every file needs a path")
        path = item["path"]
        parts = path.split("/")
        if not path or path.startswith("/") or ".." in parts or parts[0].startswith(".."):
            raise InvalidArgument(f"{where}: file path {path!r} must be relative without '..'")
        mode = item.get("mode", 0o644)
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise InvalidArgument(f"{where}: file {path!r} has an invalid mode {mode!r}")
        try:
            data = base64.b64decode(str(item.get("data", "")), validate=True)
        except ValueError:
            raise InvalidArgument(f"{where}: file {path!r} data is not base64") from None
        out.append(VolumeFile(path, data, mode))
    return tuple(out)


def write_atomic(target: Path, files: Sequence[VolumeFile]) -> bool:
    """Make ``target`` hold exactly ``files`` (atomic-writer layout); False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    if _current(target) == {f.path: (f.data, f.mode) for f in files}:
        return False
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 10**9:09d}"
    stamp.mkdir(mode=0o755)
    for f in files:
        dest = stamp / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(f.data)
        os.chmod(dest, f.mode)
    old = os.readlink(target / DATA_LINK) if (target / DATA_LINK).is_symlink() else None
    tmp = target / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(stamp.name, tmp)
    os.replace(tmp, target / DATA_LINK)
    tops = {f.path.split("/")[0] for f in files}
    for name in tops:
        link = target / name
        if not link.is_symlink():
            os.symlink(f"{DATA_LINK}/{name}", link)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    if old and old != stamp.name:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _current(target: Path) -> dict[str, tuple[bytes, int]] | None:
    data = target / DATA_LINK
    if not data.is_symlink():
        return None
    root = data.resolve()
    found: dict[str, tuple[bytes, int]] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = Path(dirpath) / name
            found[str(full.relative_to(root))] = (full.read_bytes(), full.stat().st_mode & 0o777)
    return found


@dataclass(frozen=True)
class Mount:
    volume: str
    mount_path: str
    sub_path: str
    read_only: bool


class PodVolumes:
    """One pod's volume directories and mount links (see the module docstring)."""

    def __init__(self, state_dir: Path, mount_root: Path) -> None:
        self.state_dir = state_dir
        self.mount_root = mount_root
        self._links: list[Path] = []

    def volume_dir(self, name: str) -> Path:
        return self.state_dir / name

    def setup(self, empty_dirs: Sequence[str], content: Mapping[str, Sequence[VolumeFile]]) -> None:
        for name in empty_dirs:
            self.volume_dir(name).mkdir(parents=True, exist_ok=True)
        for name, files in content.items():
            write_atomic(self.volume_dir(name), files)

    def update(self, content: Mapping[str, Sequence[VolumeFile]]) -> list[str]:
        return [name for name, files in content.items() if write_atomic(self.volume_dir(name), files)]

    def mount(self, mounts: Sequence[Mount]) -> None:
        for m in mounts:
            source = self.volume_dir(m.volume)
            if m.sub_path:
                source = source / m.sub_path
                if not source.exists() and not source.is_symlink():
                    source.mkdir(parents=True)  # as the kubelet does for a missing subPath
            link = self.mount_root / m.mount_path.lstrip("/")
            if link.is_symlink():
                if os.readlink(link) == str(source):
                    continue
                link.unlink()
            elif link.exists():
                raise FailedPrecondition(f"mountPath {m.mount_path} exists on the instance; not replacing it")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, link)
            self._links.append(link)

    def remove(self) -> None:
        for link in self._links:
            if link.is_symlink():
                link.unlink()
        self._links.clear()
        shutil.rmtree(self.state_dir, ignore_errors=True)
