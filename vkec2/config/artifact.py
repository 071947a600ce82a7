"""The pinned agent artifact the user-data installer fetches: ``agent.artifact`` (docs/agent.md "Install").

``make agent-artifact`` builds one self-contained tarball per platform (``scripts/agent_artifact.py``)
with a sha256 next to it. Configured here, by an S3 bucket and a key per platform (or an ``s3://``
URL with ``{platform}`` in it), with the sha256 of each, the installer downloads it with the
instance role, refuses it unless the checksum matches, checks the Python and installs nothing from
the internet. Without it the legacy ``bootstrap.s3_bucket``/``s3_key`` path still works but pip
installs the agent's dependencies from PyPI at every boot: :func:`legacy_install_warning` says so
when the configuration is loaded.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from vkec2.config.shapes import Section

#: The artifact platforms, as ``scripts/agent_artifact.py`` names them.
ARTIFACT_PLATFORMS = ("linux-x86_64", "linux-aarch64", "macos-arm64")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY = re.compile(r"[\x21-\x7e]{1,1024}")  # printable, no spaces: it is rendered into a shell script


class AgentArtifact(Section):
    """Where each platform's artifact lives and its sha256; ``url`` or ``s3_bucket`` + ``s3_key``."""

    url: str | None = Field(
        default=None, description="s3://BUCKET/KEY; {platform} is replaced by the instance's platform."
    )
    s3_bucket: str | None = None
    s3_key: str | None = Field(default=None, description="Object key; {platform} is replaced as in url.")
    sha256: dict[str, str] = Field(
        default_factory=dict, description="Platform (linux-x86_64, linux-aarch64, macos-arm64) -> sha256."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        bucket, _, key = value.removeprefix("s3://").partition("/")
        if not value.startswith("s3://") or not _BUCKET.fullmatch(bucket) or not _KEY.fullmatch(key):
            raise ValueError(f"must be an s3://BUCKET/KEY URL, not {value!r}")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.fullmatch(value):
            raise ValueError(f"not an S3 bucket name: {value!r}")
        return value

    @field_validator("s3_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not _KEY.fullmatch(value):
            raise ValueError(f"an S3 key of printable characters without spaces, not {value!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _digests(cls, value: dict[str, str]) -> dict[str, str]:
        for plat, digest in value.items():
            if plat not in ARTIFACT_PLATFORMS:
                raise ValueError(f"unknown platform {plat!r} (known: {', '.join(ARTIFACT_PLATFORMS)})")
            if not _SHA256.fullmatch(digest):
                raise ValueError(f"the sha256 of {plat} must be 64 lowercase hex digits")
        return value

    @model_validator(mode="after")
    def _where(self) -> AgentArtifact:
        if (self.url is None) == (self.s3_bucket is None or self.s3_key is None):
            raise ValueError("give either url or both s3_bucket and s3_key")
        if not self.sha256:
            raise ValueError("give the sha256 of at least one platform (dist/agent/*.sha256)")
        return self

    def location(self, plat: str) -> tuple[str, str]:
        """``(bucket, key)`` of ``plat``'s artifact."""
        if self.url is not None:
            bucket, _, key = self.url.removeprefix("s3://").partition("/")
        else:
            bucket, key = str(self.s3_bucket), str(self.s3_key)
        return bucket, key.replace("{platform}", plat)

    def digest(self, plat: str) -> str:
        """The sha256 ``plat``'s artifact must have; ValueError naming the platform when none is set."""
        if plat not in self.sha256:
            known = ", ".join(self.sha256)
            raise ValueError(f"agent.artifact has no sha256 for platform {plat} (configured: {known})")
        return self.sha256[plat]


def legacy_install_warning(artifact: AgentArtifact | None, s3_bucket: str | None) -> str | None:
    """A warning when instances will install the agent's dependencies from PyPI at boot."""
    if artifact is not None or not s3_bucket:
        return None
    return (
        "agent.artifact is not set: the user data installs grpcio, grpcio-health-checking and protobuf "
        "from PyPI (unpinned) at every boot; build the pinned artifact with 'make agent-artifact' and "
        "configure agent.artifact (docs/agent.md)"
    )
