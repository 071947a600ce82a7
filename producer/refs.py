"""What a pod references, resolved the way the kubelet resolves it: env, envFrom and volume files.

:func:`resolve` walks a pod's ``env[].valueFrom`` (``secretKeyRef``, ``configMapKeyRef``), its
``envFrom`` (ConfigMap/Secret, ``prefix``) and its configMap / secret / downwardAPI / projected
volumes (``items``, ``defaultMode``, per-item ``mode``, ``optional``; projected sources configMap,
secret, downwardAPI and ``serviceAccountToken``) through a :class:`Lookup` that GETs one named
object at a time, and returns the content the agent needs (JSON: ``containers`` →
``{envFrom: [[name, value]], env: {name: value}}``, ``volumes`` → ``[{path, data (base64), mode}]``).
A missing object or key that is not ``optional`` raises :class:`RefError` with the kubelet's wording
(``secret "x" not found``, ``couldn't find key k in Secret ns/x``); the caller leaves the pod Pending
with reason ``CreateContainerConfigError`` and tries again. Pure: no Kubernetes client here.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Mapping
from typing import Any, Protocol

from vkec2.contract import CREATE_CONTAINER_CONFIG_ERROR

Obj = dict[str, Any]
DEFAULT_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600
MIN_TOKEN_SECONDS = 600
_SIMPLE_FIELDS = ("metadata.name", "metadata.namespace", "metadata.uid")


class RefError(Exception):
    """A reference the pod needs cannot be resolved (now): the pod waits, with this message."""

    reason = CREATE_CONTAINER_CONFIG_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Lookup(Protocol):
    """One GET per referenced object; None when it does not exist."""

    def configmap(self, namespace: str, name: str) -> Obj | None: ...

    def secret(self, namespace: str, name: str) -> Obj | None: ...

    def token(self, pod: Mapping[str, Any], audience: str, seconds: int) -> str:
        """A TokenRequest for the pod's service account, bound to the pod."""
        ...


def needs_resolving(pod: Mapping[str, Any]) -> bool:
    """True when the pod references anything this module resolves."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("envFrom"):
            return True
        for var in c.get("env") or []:
            vf = var.get("valueFrom") or {}
            if vf.get("secretKeyRef") or vf.get("configMapKeyRef"):
                return True
    return any(
        isinstance(v, dict) and any(k in v for k in ("configMap", "secret", "downwardAPI", "projected"))
        for v in spec.get("volumes") or []
    )


def _secret_values(obj: Obj) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        out[str(key)] = base64.b64decode(str(value))
    for key, value in (obj.get("stringData") or {}).items():  # manifests in standalone mode
        out[str(key)] = str(value).encode()
    return out


def _configmap_values(obj: Obj, binary: bool = True) -> dict[str, bytes]:
    out = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()}
    if binary:
        for key, value in (obj.get("binaryData") or {}).items():
            out[str(key)] = base64.b64decode(str(value))
    return out


class _Resolver:
    def __init__(self, pod: Mapping[str, Any], lookup: Lookup) -> None:
        self.pod = pod
        self.lookup = lookup
        meta = pod.get("metadata") or {}
        self.namespace = str(meta.get("namespace") or "default")
        self._cache: dict[tuple[str, str], dict[str, bytes] | None] = {}

    def values(self, kind: str, name: str, binary: bool = True) -> dict[str, bytes] | None:
        if not isinstance(name, str) or not name:
            raise RefError(f"a {kind} reference has no name")
        key = (f"{kind}:{binary}", name)
        if key not in self._cache:
            if kind == "secret":
                obj = self.lookup.secret(self.namespace, name)
                self._cache[key] = None if obj is None else _secret_values(obj)
            else:
                obj = self.lookup.configmap(self.namespace, name)
                self._cache[key] = None if obj is None else _configmap_values(obj, binary)
        return self._cache[key]

    def missing(self, kind: str, name: str) -> RefError:
        return RefError(f'{"secret" if kind == "secret" else "configmap"} "{name}" not found')

    def missing_key(self, kind: str, name: str, key: str) -> RefError:
        what = "Secret" if kind == "secret" else "ConfigMap"
        return RefError(f"couldn't find key {key} in {what} {self.namespace}/{name}")

    # -- env ---------------------------------------------------------------------------------

    def container_env(self, c: Mapping[str, Any]) -> Obj:
        env_from: list[list[str]] = []
        for source in c.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
                ref = source.get(field)
                if not isinstance(ref, dict):
                    continue
                found = self.values(kind, ref.get("name", ""), binary=False)
                if found is None:
                    if ref.get("optional"):
                        continue
                    raise self.missing(kind, ref.get("name", ""))
                for key in sorted(found):
                    if "=" not in key:
                        env_from.append([prefix + key, found[key].decode("utf-8", "replace")])
        env: dict[str, str] = {}
        for var in c.get("env") or []:
            vf = var.get("valueFrom") or {}
            for kind, field in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
                ref = vf.get(field)
                if not isinstance(ref, dict):
                    continue
                name, key, optional = ref.get("name", ""), str(ref.get("key", "")), bool(ref.get("optional"))
                found = self.values(kind, name, binary=False)
                if found is None:
                    if optional:
                        continue
                    raise self.missing(kind, name)
                if key not in found:
                    if optional:
                        continue
                    raise self.missing_key(kind, name, key)
                env[str(var["name"])] = found[key].decode("utf-8", "replace")
        return {"envFrom": env_from, "env": env}

    # -- volumes -----------------------------------------------------------------------------

    def keyed(self, kind: str, source: Mapping[str, Any], default_mode: int, name_field: str) -> list[Obj]:
        name = source.get(name_field, "")
        found = self.values(kind, name)
        optional = bool(source.get("optional"))
        if found is None:
            if optional:
                return []
            raise self.missing(kind, name)
        items = source.get("items")
        if not items:
            return [_file(key, value, default_mode) for key, value in sorted(found.items())]
        files = []
        for item in items:
            key = str(item.get("key", ""))
            if key not in found:
                if optional:
                    continue
                what = "secret" if kind == "secret" else "configmap"
                raise RefError(f"{what} {self.namespace}/{name} references non-existent key {key}")
            files.append(_file(str(item.get("path", key)), found[key], int(item.get("mode", default_mode))))
        return files

    def downward(self, source: Mapping[str, Any], default_mode: int) -> list[Obj]:
        files = []
        for item in source.get("items") or []:
            ref = item.get("fieldRef") or {}
            path = ref.get("fieldPath")
            if not isinstance(path, str):
                raise RefError(f"downwardAPI item {item.get('path')!r}: only fieldRef is supported")
            value = field_text(self.pod, path)
            files.append(
                _file(str(item.get("path", "")), value.encode(), int(item.get("mode", default_mode)))
            )
        return files

    def volume(self, vol: Mapping[str, Any]) -> list[Obj] | None:
        for kind, field, name_field in (
            ("configmap", "configMap", "name"),
            ("secret", "secret", "secretName"),
        ):
            if isinstance(vol.get(field), dict):
                src = vol[field]
                return self.keyed(kind, src, int(src.get("defaultMode", DEFAULT_MODE)), name_field)
        if isinstance(vol.get("downwardAPI"), dict):
            src = vol["downwardAPI"]
            return self.downward(src, int(src.get("defaultMode", DEFAULT_MODE)))
        if isinstance(vol.get("projected"), dict):
            src = vol["projected"]
            mode = int(src.get("defaultMode", DEFAULT_MODE))
            files: list[Obj] = []
            for s in src.get("sources") or []:
                if isinstance(s.get("configMap"), dict):
                    files += self.keyed("configmap", s["configMap"], mode, "name")
                elif isinstance(s.get("secret"), dict):
                    files += self.keyed("secret", s["secret"], mode, "name")
                elif isinstance(s.get("downwardAPI"), dict):
                    files += self.downward(s["downwardAPI"], mode)
                elif isinstance(s.get("serviceAccountToken"), dict):
                    files.append(self.token(s["serviceAccountToken"], mode))
                else:
                    raise RefError(f"projected volume {vol.get('name')!r}: unsupported source {sorted(s)}")
            return files
        return None

    def token(self, src: Mapping[str, Any], mode: int) -> Obj:
        seconds = int(src.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        if seconds < MIN_TOKEN_SECONDS:
            raise RefError(f"serviceAccountToken expirationSeconds must be at least {MIN_TOKEN_SECONDS}")
        token = self.lookup.token(self.pod, str(src.get("audience") or ""), seconds)
        return _file(str(src.get("path", "")), token.encode(), mode)


def field_text(pod: Mapping[str, Any], path: str) -> str:
    """A downward API volume file's text for ``fieldPath``."""
    meta = pod.get("metadata") or {}
    if path in _SIMPLE_FIELDS:
        return str(meta.get(path.split(".", 1)[1]) or "")
    for what in ("labels", "annotations"):
        whole = meta.get(what) or {}
        if path == f"metadata.{what}":
            return "\n".join(f'{k}="{v}"' for k, v in sorted(whole.items()))
        head = f"metadata.{what}['"
        if path.startswith(head) and path.endswith("']"):
            return str(whole.get(path[len(head) : -2], ""))
    raise RefError(f"downwardAPI fieldPath {path!r} is not supported in a volume")


def _file(path: str, data: bytes, mode: int) -> Obj:
    clean = posixpath.normpath(path) if path else ""
    if not path or path.startswith("/") or clean.startswith("..") or ".." in path.split("/"):
        raise RefError(f"volume file path {path!r} must be relative and must not contain '..'")
    if not 0 <= mode <= 0o777:
        raise RefError(f"file mode {mode:o} of {path!r} is out of range (0-0777)")
    return {"path": clean, "data": base64.b64encode(data).decode(), "mode": mode}


def resolve(pod: Mapping[str, Any], lookup: Lookup) -> Obj:
    """The resolved content of ``pod`` (see the module docstring); RefError when something is missing
    or malformed (a mode that is no number, a value that is not base64: named, never a crash)."""
    try:
        return _resolve(pod, lookup)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise RefError(f"the pod's ConfigMap/Secret references cannot be resolved: {exc!r}") from None


def _resolve(pod: Mapping[str, Any], lookup: Lookup) -> Obj:
    r = _Resolver(pod, lookup)
    spec = pod.get("spec") or {}
    containers = {
        str(c.get("name")): r.container_env(c)
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }
    volumes: dict[str, list[Obj]] = {}
    for vol in spec.get("volumes") or []:
        files = r.volume(vol)
        if files is not None:
            volumes[str(vol.get("name"))] = files
    return {
        "containers": {k: v for k, v in containers.items() if v["env"] or v["envFrom"]},
        "volumes": volumes,
    }
