"""Settings for ConfigMap, Secret and projected volume content: the sealing keys and the refresh.

The producer resolves what a pod references (``env[].valueFrom``, ``envFrom``, configMap / secret /
downwardAPI / projected volumes) and stores it in Redis sealed with Fernet; workers open it just
before they hand it to the agent over mTLS (docs/security.md). ``keys`` (or ``key_file``, one key a
line) are urlsafe-base64 Fernet keys, the first seals and all open, so a key is rotated by putting a
new one first and dropping the old one once every stored payload was re-sealed. ``refresh_seconds``
is how often the producer re-reads the objects its running pods reference so mounted files follow
their changes, as the kubelet's sync loop does.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from vkec2.config.shapes import Section


class SecretsSettings(Section):
    """Fernet keys for resolved pod content (first seals, all open) and the producer's refresh."""

    keys: list[SecretStr] = Field(default_factory=list)
    key_file: str | None = Field(default=None, description="A file with one Fernet key a line, newest first.")
    refresh_seconds: float = Field(default=60.0, gt=0)

    def all_keys(self) -> list[str]:
        """The configured keys, newest first: ``keys`` then the lines of ``key_file``."""
        found = [k.get_secret_value().strip() for k in self.keys if k.get_secret_value().strip()]
        if self.key_file:
            text = Path(self.key_file).read_text(encoding="utf-8")
            found += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        return found
