"""Sealing of resolved pod content (ConfigMap/Secret values, tokens) for its stay in Redis.

The producer seals the JSON it resolved for a pod with Fernet (AES-CBC + HMAC, from the
``cryptography`` package already used for the fleet CA) before it writes the desired spec, and
workers open it just before LaunchApplication carries it to the agent over mTLS, so Redis never
holds a value in plaintext. :class:`Sealer` wraps a MultiFernet: the first configured key seals,
every key opens (rotation). The ``digest`` stored next to the token is an HMAC of the volume content
under a key derived from the sealing key, so the producer can tell a changed ConfigMap without
opening anything and without a plain hash of a secret in Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from vkec2.contract import RESOLVED_FIELD
from vkec2.errors import Vkec2Error


class SealingError(Vkec2Error):
    """Resolved content cannot be sealed or opened (no key configured, or a key that does not fit)."""

    reason = "SealingKeyError"


class Sealer:
    """Fernet keys, newest first: seal with the first, open with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SealingError(
                "no key to seal ConfigMap/Secret content: set secrets.keys or secrets.key_file "
                "(Fernet keys, see docs/security.md)"
            )
        try:
            self._fernets = [Fernet(k.encode() if isinstance(k, str) else k) for k in keys]
        except (ValueError, TypeError) as exc:
            raise SealingError(
                f"a secrets key is not a Fernet key (32 urlsafe-base64 bytes): {exc}"
            ) from None
        self._multi = MultiFernet(self._fernets)
        self._mac_key = hashlib.sha256(b"vkec2 resolved digest\0" + keys[0].encode()).digest()

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, content: Mapping[str, Any]) -> dict[str, str]:
        """The stored form of ``content``: the Fernet token and the digest of its volumes."""
        raw = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return {"sealed": self._multi.encrypt(raw).decode(), "digest": self.digest(content)}

    def digest(self, content: Mapping[str, Any]) -> str:
        """HMAC of the volume content only (env never changes for a running container)."""
        raw = json.dumps(content.get("volumes") or {}, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._mac_key, raw, hashlib.sha256).hexdigest()

    def open(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        token = stored.get("sealed")
        if not isinstance(token, str):
            raise SealingError("the stored resolved content has no sealed token")
        try:
            return dict(json.loads(self._multi.decrypt(token.encode())))
        except InvalidToken:
            raise SealingError(
                "the resolved content was sealed with a key this process does not hold (secrets.keys)"
            ) from None


def split_resolved(pod: Mapping[str, Any]) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
    """The pod without its sealed field, and that field (None when the pod has none)."""
    stored = pod.get(RESOLVED_FIELD)
    plain = {k: v for k, v in pod.items() if k != RESOLVED_FIELD}
    return plain, stored if isinstance(stored, Mapping) else None
