"""A wheelhouse repacked from the distributions installed in the running environment, for offline installs.

The wheel-in-a-fresh-venv test installs vkec2's wheel with ``pip install --no-index --find-links``
so it needs no network and takes seconds, yet gets no help from this environment's ``sys.path``
(unlike ``--system-site-packages``, which would hide package data missing from the wheel). pip has
no command that turns an installed distribution back into a wheel (``pip wheel`` rebuilds from
sources), so this module does the small part needed: for every distribution that a requirement set
reaches, it zips the files its RECORD lists under site-packages, plus its ``*.dist-info``, into a
wheel named with the tag its ``WHEEL`` file records; pip recreates the console scripts from
``entry_points.txt``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_SKIPPED_METADATA = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def closure(requirements: Iterable[str]) -> dict[str, Distribution]:
    """The installed distributions these requirements reach (extras followed), by canonical name."""
    found: dict[str, Distribution] = {}
    pending = [(Requirement(r), "") for r in requirements]
    while pending:
        requirement, extra = pending.pop()
        environment = {str(k): str(v) for k, v in default_environment().items()} | {"extra": extra}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError as exc:
            raise RuntimeError(f"{requirement.name} is not installed here; cannot make its wheel") from exc
        extras = sorted(requirement.extras)
        key = f"{name}[{','.join(extras)}]"
        if key in found:
            continue
        found[key] = dist
        for declared in dist.requires or []:
            for wanted in ["", *extras]:
                pending.append((Requirement(declared), wanted))
    return {canonicalize_name(d.metadata["Name"]): d for d in found.values()}


def repack(dist: Distribution, dest: Path) -> Path:
    """Write ``dist`` (installed from a wheel) as a wheel into ``dest``; returns its path."""
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)]
    info = next(str(f).split("/")[0] for f in files if str(f).split("/")[0].endswith(".dist-info"))
    wheel_meta = dist.read_text("WHEEL")
    if wheel_meta is None:
        raise RuntimeError(f"{dist.metadata['Name']} was not installed from a wheel (no WHEEL file)")
    tags = [
        line.split(":", 1)[1].strip().split("-")
        for line in wheel_meta.splitlines()
        if line.startswith("Tag:")
    ]
    # The compressed tag set of the file name (py2.py3-none-any): each part's values joined with dots.
    tag = "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3))
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    target = dest / f"{name}-{dist.version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as wheel:
        for f in files:
            if str(f).startswith(info + "/") and f.name in _SKIPPED_METADATA:
                continue
            source = Path(str(dist.locate_file(f)))
            if source.is_file():
                wheel.write(source, str(f))
                record.append(f"{f},,")
        wheel.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return target


def make(requirements: Iterable[str], dest: Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Repack every distribution the requirements reach, except ``exclude`` (names), into ``dest``."""
    skip = {canonicalize_name(n) for n in exclude}
    dest.mkdir(parents=True, exist_ok=True)
    return [repack(dist, dest) for name, dist in sorted(closure(requirements).items()) if name not in skip]
