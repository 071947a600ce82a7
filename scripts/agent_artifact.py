"""Build the pinned, self-contained agent artifact (``make agent-artifact``; docs/agent.md "Install").

One gzipped tarball per platform (linux-x86_64, linux-aarch64, macos-arm64) holding a top directory
``vkec2-agent/`` with ``site-packages/`` (the ``agent`` package and the wheels of grpcio,
grpcio-health-checking and protobuf, unpacked), ``launch.py`` (puts that directory alone on
``sys.path`` and runs the agent, or ``--check`` only imports it), ``bin/vkec2-agent`` (runs
``launch.py`` under ``python -I -S``: nothing of the host's site-packages is seen) and a
``manifest.json``. grpcio's C extension is built per CPython minor version, so one artifact merges
the wheels for every Python in ``--python`` (by default 3.10 to 3.13; the extension modules carry
their version in their file names, the rest is identical). The wheels come from
``agent/requirements.lock`` (versions and sha256 hashes) with ``pip --require-hashes
--only-binary=:all: --platform ... --python-version ...``, through a wheel cache directory so a
rebuild works offline. Next to each ``.tar.gz`` go a ``.sha256`` and ``dist/agent/manifest.json``
(platform, python tags, version, sha256). The tarballs are reproducible (sorted entries, fixed
times and owners). ``lock`` regenerates the lock file from PyPI. pip is the only tool that can fetch
wheels for another platform; nothing here re-implements it, this only drives it and packs the result.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "agent" / "requirements.lock"
DIST = ROOT / "dist" / "agent"
TOP = "vkec2-agent"
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
#: Our platform name -> the pip ``--platform`` tags whose wheels fit it.
PLATFORMS: dict[str, tuple[str, ...]] = {
    "linux-x86_64": ("manylinux2014_x86_64", "manylinux_2_17_x86_64"),
    "linux-aarch64": ("manylinux2014_aarch64", "manylinux_2_17_aarch64"),
    "macos-arm64": ("macosx_11_0_arm64",),
}
PINS = ("grpcio==1.85.3", "grpcio-health-checking==1.85.1", "protobuf==7.36.2", "typing-extensions==4.16.0")

LAUNCH_PY = '''"""vkec2 agent launcher: this artifact's site-packages alone on sys.path (python -I -S)."""
import os, runpy, sys
if sys.version_info < (3, 10):
    sys.exit("VKEC2-AGENT-INSTALL-FAILED: the agent needs Python >= 3.10, not %d.%d" % sys.version_info[:2])
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "site-packages"))
if sys.argv[1:] == ["--check"]:
    try:
        import grpc, grpc_health.v1.health, google.protobuf, agent.server  # noqa: F401
    except Exception as exc:  # anything that stops the import stops the agent
        sys.exit("VKEC2-AGENT-INSTALL-FAILED: the agent does not import on Python %d.%d: %s"
                 % (sys.version_info[0], sys.version_info[1], exc))
    print("vkec2: agent artifact imports on Python %d.%d" % sys.version_info[:2])
    sys.exit(0)
sys.argv[0] = "agent"
runpy.run_module("agent", run_name="__main__", alter_sys=True)
'''

LAUNCHER_SH = """#!/bin/sh
# vkec2 agent launcher: the Python in VKEC2_PYTHON (else python3), isolated from the host's packages.
here=$(cd "$(dirname "$0")/.." && pwd)
exec "${VKEC2_PYTHON:-python3}" -I -S "$here/launch.py" "$@"
"""


def local_platform() -> str:
    """This machine's platform name, as in :data:`PLATFORMS`."""
    machine = platform.machine().lower()
    if sys.platform == "darwin":
        return "macos-arm64"
    return "linux-aarch64" if machine in ("aarch64", "arm64") else "linux-x86_64"


def local_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_FIND_LINKS": ""}  # the host's pip config: not ours
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"pip failed ({' '.join(args[:1])}): {done.stderr.strip()[-2000:]}")


def _target_args(plat: str, python: str) -> list[str]:
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    for tag in PLATFORMS[plat]:
        args += ["--platform", tag]
    return args


def fetch_wheels(plat: str, python: str, cache: Path, lock: Path, offline: bool) -> None:
    """The locked wheels for ``plat``/``python`` into ``cache`` (already there: no network)."""
    base = ["download", "--require-hashes", "-r", str(lock), "-d", str(cache)]
    base += _target_args(plat, python)
    try:
        _pip(*base, "--no-index", "--find-links", str(cache))
    except SystemExit:
        if offline:
            raise
        _pip(*base)


def install_tree(plat: str, pythons: list[str], cache: Path, lock: Path, dest: Path, offline: bool) -> None:
    """Unpack the locked wheels for every Python in ``pythons`` into one ``dest`` directory."""
    dest.mkdir(parents=True)
    for python in pythons:
        fetch_wheels(plat, python, cache, lock, offline)
        with tempfile.TemporaryDirectory() as tmp:
            _pip(
                "install", "--require-hashes", "--no-compile", "--no-index", "--find-links",
                str(cache), "-r", str(lock), "--target", tmp, *_target_args(plat, python),
            )  # fmt: skip
            shutil.copytree(tmp, dest, dirs_exist_ok=True)  # same pure files; per-version .so added
    shutil.rmtree(dest / "bin", ignore_errors=True)  # console scripts of the wheels: not used
    shutil.copytree(ROOT / "agent", dest / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
    return info


def pack(tree: Path, out: Path) -> str:
    """A reproducible ``.tar.gz`` of ``tree`` (as ``vkec2-agent/``); returns its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted([tree, *tree.rglob("*")]):
            name = TOP if path == tree else f"{TOP}/{path.relative_to(tree).as_posix()}"
            tar.add(path, arcname=name, recursive=False, filter=_tar_filter)
    with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buf.getvalue())
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n")
    return digest


def version() -> str:
    """vkec2's version plus the lock's digest: a new pin is a new artifact version."""
    text = (ROOT / "pyproject.toml").read_text()
    base = next(line.split('"')[1] for line in text.splitlines() if line.startswith("version = "))
    return f"{base}+lock.{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]}"


def build(
    plat: str, pythons: list[str], out_dir: Path, cache: Path, *, offline: bool = False
) -> dict[str, str]:
    """Build one platform's artifact into ``out_dir``; returns its manifest entry."""
    if plat not in PLATFORMS:
        raise SystemExit(f"unknown platform {plat!r} (known: {', '.join(PLATFORMS)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    tags = ",".join(f"cp{p.replace('.', '')}" for p in pythons)
    entry = {"platform": plat, "python": tags, "version": version()}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / TOP
        install_tree(plat, pythons, cache, LOCK, tree / "site-packages", offline)
        (tree / "launch.py").write_text(LAUNCH_PY)
        (tree / "bin").mkdir()
        (tree / "bin" / "vkec2-agent").write_text(LAUNCHER_SH)
        (tree / "bin" / "vkec2-agent").chmod(0o755)
        (tree / "manifest.json").write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")
        name = f"vkec2-agent-{plat}.tar.gz"
        entry = {**entry, "file": name, "sha256": pack(tree, out_dir / name)}
    return entry


def write_manifest(out_dir: Path, entries: list[dict[str, str]]) -> None:
    path = out_dir / "manifest.json"
    old = json.loads(path.read_text()).get("artifacts", []) if path.exists() else []
    merged = {e["platform"]: e for e in [*old, *entries]}
    path.write_text(
        json.dumps({"artifacts": sorted(merged.values(), key=lambda e: e["platform"])}, indent=2) + "\n"
    )


def write_lock(cache: Path) -> None:
    """Regenerate ``agent/requirements.lock``: every platform's and Python's wheels of :data:`PINS`."""
    hashes: dict[str, set[str]] = {pin: set() for pin in PINS}
    for plat in PLATFORMS:
        for python in PYTHONS:
            with tempfile.TemporaryDirectory() as tmp:
                _pip("download", "--no-deps", "-d", tmp, *PINS, *_target_args(plat, python))
                for wheel in Path(tmp).glob("*.whl"):
                    shutil.copy2(wheel, cache / wheel.name)
                    project = wheel.name.split("-")[0].replace("_", "-").lower()
                    pin = next(p for p in PINS if p.split("==")[0] == project)
                    hashes[pin].add(hashlib.sha256(wheel.read_bytes()).hexdigest())
    lines = ["# The agent's dependencies, pinned with the sha256 of every wheel the artifacts use.",
             "# Regenerate: python scripts/agent_artifact.py lock (docs/agent.md).", ""]  # fmt: skip
    for pin in PINS:
        lines.append(pin + "".join(f" \\\n    --hash=sha256:{h}" for h in sorted(hashes[pin])))
    LOCK.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "lock"], nargs="?", default="build")
    parser.add_argument(
        "--platform", action="append", help=f"one of {', '.join(PLATFORMS)}; 'local'; repeatable"
    )
    parser.add_argument(
        "--python", action="append", help=f"CPython minor versions (default {', '.join(PYTHONS)})"
    )
    parser.add_argument("--out", type=Path, default=DIST)
    parser.add_argument("--cache", type=Path, default=ROOT / "dist" / "wheel-cache")
    parser.add_argument("--offline", action="store_true", help="use only the wheel cache")
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.command == "lock":
        write_lock(args.cache)
        print(f"wrote {LOCK}")
        return 0
    plats = [local_platform() if p == "local" else p for p in (args.platform or list(PLATFORMS))]
    entries = [
        build(p, args.python or list(PYTHONS), args.out, args.cache, offline=args.offline) for p in plats
    ]
    write_manifest(args.out, entries)
    for entry in entries:
        print(f"{args.out / entry['file']}  {entry['sha256']}  ({entry['python']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
