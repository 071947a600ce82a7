"""Loading the configuration: one YAML or JSON file, then the ``VKEC2_*`` environment on top.

:func:`load_config` reads the file (``$VKEC2_CONFIG`` when no path is given; a key given twice is
an error), maps the original provider's ``config.json`` through :mod:`vkec2.config.legacy`, lays
the environment over it, and validates the result as one :class:`~vkec2.config.model.Settings`.
The environment is read by pydantic-settings with the names declared on the model
(``VKEC2_AGENT__PORT`` sets ``agent.port``); a variable replaces the key it names, so
``VKEC2_EC2__TAGS`` replaces the whole mapping while ``VKEC2_AGENT__PORT`` keeps the file's other
``agent`` keys. List entries (``VKEC2_WARM_POOLS__0__DESIRED_COUNT``) go through a small shim.
Every problem becomes one line of :class:`~vkec2.config.errors.InvalidConfig`, named by the file
or the variable; warnings go to the ``vkec2.config`` logger.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_origin

import yaml
from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, SettingsError

from vkec2.config.annotations import UNKNOWN, annotation_at, is_optional, is_structured, strip_optional
from vkec2.config.artifact import legacy_install_warning
from vkec2.config.errors import Collector, InvalidConfig, KeyPath, Origin, describe, kind, render
from vkec2.config.hosts import macs_without_hosts
from vkec2.config.legacy import from_legacy, is_legacy
from vkec2.config.model import CONFIG_ENV, ENV_PREFIX, Settings
from vkec2.config.transport import plaintext_agents_problem, plaintext_agents_warning

logger = logging.getLogger("vkec2.config")


@dataclass(frozen=True)
class LoadedConfig:
    """The result of :func:`load_config`: settings, the warnings raised while loading, the file."""

    settings: Settings
    warnings: tuple[str, ...]
    path: str | None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate the configuration.

    ``path`` is a YAML or JSON file (the original provider's ``config.json`` is recognised); when
    None, ``$VKEC2_CONFIG`` names it, and without either only defaults and the environment apply.
    ``env`` (default ``os.environ``) supplies ``VKEC2_*`` overrides, which win over the file.
    Warnings are logged on the ``vkec2.config`` logger. Raises :class:`InvalidConfig` (a
    :class:`~vkec2.errors.ConfigError`) listing every error with its key path and source.
    """
    return load_config(path, env).settings


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Like :func:`load_settings`, also returning the warnings and the file that was read."""
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    out = Collector()
    data: dict[str, Any] = {}
    source: str | None = None
    if path is not None:
        source = os.fspath(path)
        raw = _read_file(source)
        data = from_legacy(raw, source, out) if is_legacy(raw) else raw
    data = _apply_env(data, environ, out)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        out.errors.extend(describe(exc, source, out.origins))
    if settings is not None:
        _check_transport(settings, source, out)
        out.warnings.extend(macs_without_hosts(settings.ec2, settings.warm_pools))
        legacy = legacy_install_warning(settings.agent.artifact, settings.bootstrap.s3_bucket)
        out.warnings.extend([legacy] if legacy else [])
    if out.errors or settings is None:
        raise InvalidConfig(out.errors)
    for warning in out.warnings:
        logger.warning("%s", warning)
    return LoadedConfig(settings=settings, warnings=tuple(out.warnings), path=source)


def _check_transport(settings: Settings, source: str | None, out: Collector) -> None:
    """Plaintext agents are refused outside loopback unless named (:mod:`vkec2.config.transport`)."""
    problem = plaintext_agents_problem(settings.agent)
    if problem is not None:
        key, message = problem
        origin = out.origins.get(tuple(key.split(".")))
        where = f"{origin.source}: {origin.label}" if origin else f"{source or 'configuration'}: {key}"
        out.errors.append(f"{where}: {message}")
    warning = plaintext_agents_warning(settings.agent)
    if warning is not None:
        out.warnings.append(warning)


def read_file(source: str) -> dict[str, Any]:
    """The parsed top-level mapping of a configuration file (``vkec2 migrate`` reads a legacy file
    with it); raises :class:`InvalidConfig` naming the file when it cannot be read or parsed."""
    return _read_file(source)


def _read_file(source: str) -> dict[str, Any]:
    try:
        with open(source, "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise InvalidConfig([f"{source}: cannot read the configuration file: {problem}"]) from None
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidConfig([f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    is_json = source.lower().endswith(".json")
    parsed: Any
    if is_json or text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text, object_pairs_hook=_unique_pairs)
        except _DuplicateKey as exc:
            raise InvalidConfig([f"{source}: key {exc.key!r} appears twice in one object"]) from None
        except json.JSONDecodeError as exc:
            if is_json:
                raise InvalidConfig([f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from None
            parsed = _load_yaml(text, source)  # YAML flow mappings also start with "{"
    else:
        parsed = _load_yaml(text, source)
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise InvalidConfig([f"{source}: the top level must be a mapping, not {kind(parsed)}"])
    bad_keys = [key for key in parsed if not isinstance(key, str)]
    if bad_keys:
        raise InvalidConfig([f"{source}: {key!r}: keys must be strings" for key in bad_keys])
    return parsed


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key if isinstance(key, str | int | float | bool) else id(key))
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise InvalidConfig([f"{where}: invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise InvalidConfig([f"{source}: invalid YAML: {exc}"]) from None


# --- environment overrides ---------------------------------------------------------------------
# pydantic-settings reads the variables (prefix, ``__`` nesting, JSON for lists, mappings and
# sections: Settings.model_config). Around it: which variable set which key (for error messages),
# "a variable replaces the key it names" when merging onto the file, an empty value nulling an
# optional key, and the list-index shim, since pydantic-settings has no notion of list indices.


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source for :class:`Settings`, over a given mapping.

    Like the library's own secret-manager sources, it replaces ``_load_env_vars`` so the variables
    come from the mapping instead of ``os.environ``. Names are lower-cased after the ``VKEC2_``
    prefix (field names are lower case): variable names are case-insensitive, while the keys of
    a JSON value are matched exactly, as in the file (the model is ``case_sensitive``).
    """

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        cut = len(ENV_PREFIX)
        return {ENV_PREFIX + name[cut:].lower(): value for name, value in self._variables.items()}


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], out: Collector) -> dict[str, Any]:
    """``data`` (from the file) with the ``VKEC2_*`` variables of ``environ`` on top."""
    plain: dict[str, KeyPath] = {}  # read by pydantic-settings
    indexed: dict[str, KeyPath] = {}  # through a list index: the shim
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        parts = var[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in Settings.model_fields:
            # Other tools share the prefix (VKEC2_KUBETOOLS_CACHE ...): ignore, but flag near misses.
            close = difflib.get_close_matches(parts[0], list(Settings.model_fields), n=1, cutoff=0.85)
            if close:
                out.warnings.append(
                    f"env {var}: ignored: {parts[0]!r} is not a setting (did you mean "
                    f"{ENV_PREFIX}{close[0].upper()}?)"
                )
            continue
        path, through_list = _key_path(parts)
        (indexed if through_list else plain)[var] = path
    overrides, read = _read_plain({var: environ[var] for var in plain}, plain, out)
    owned: set[KeyPath] = set()
    for var, path in plain.items():
        if var in read and _settle(overrides, path, environ[var], f"env {var}", out):
            owned.add(path)
            _register(out, path, var)
    merged: dict[str, Any] = _overlay(data, overrides, (), owned)
    for var, path in indexed.items():
        if _set_indexed(merged, path, environ[var], f"env {var}", out):
            _register(out, path, var)
    return merged


def _key_path(parts: list[str]) -> tuple[KeyPath, bool]:
    """The key path a variable names (indices as ints), and whether it goes through a list."""
    path: list[str | int] = []
    through_list = False
    for part in parts:
        if get_origin(strip_optional(annotation_at(path))) is list:
            through_list = True
            path.append(int(part) if part.isdigit() else part)
        else:
            path.append(part)
    return tuple(path), through_list


def _read_plain(
    variables: dict[str, str], paths: Mapping[str, KeyPath], out: Collector
) -> tuple[dict[str, Any], set[str]]:
    """What pydantic-settings reads from ``variables``, and which of them it could read.

    A value that is not valid JSON where JSON is expected stops pydantic-settings at the first
    one; then each variable is tried alone, so every bad one is reported by name.
    """
    try:
        return _EnvSource(variables)(), set(variables)
    except (SettingsError, RecursionError):
        pass
    good: dict[str, str] = {}
    for var, value in variables.items():
        try:
            _EnvSource({var: value})()
        except (SettingsError, RecursionError) as exc:
            cause = exc.__cause__ if isinstance(exc, SettingsError) else exc
            out.errors.append(f"env {var}: {render(paths[var])}: not valid JSON ({cause})")
        else:
            good[var] = value
    return _EnvSource(good)(), set(good)


def _settle(overrides: dict[str, Any], path: KeyPath, raw: str, source: str, out: Collector) -> bool:
    """Check that pydantic-settings put the variable at ``path``; an empty value nulls an optional key."""
    parent: Any = overrides
    for part in path[:-1]:
        parent = parent.get(part) if isinstance(parent, dict) else None
    if len(path) == 1 and path[0] not in parent:  # pydantic-settings leaves out a JSON null
        parent[path[0]] = None
    elif not isinstance(parent, dict) or path[-1] not in parent:  # it names a key below a plain value
        out.errors.append(f"{source}: {render(path)}: {render(path[:-1])} is not a mapping")
        return False
    if raw == "" and is_optional(annotation_at(path)):
        parent[path[-1]] = None
    return True


def _overlay(base: Any, env: Any, path: KeyPath, owned: set[KeyPath]) -> Any:
    """``env`` over ``base``: a key a variable names is replaced whole, mappings above it merge."""
    if path in owned or not isinstance(env, dict) or not isinstance(base, dict):
        return env
    merged = dict(base)
    for key, value in env.items():
        merged[key] = _overlay(base.get(key), value, (*path, key), owned)
    return merged


def _set_indexed(data: dict[str, Any], path: KeyPath, raw: str, source: str, out: Collector) -> bool:
    """The list-index shim: set ``path`` (``warm_pools[1].desired_count``) to ``raw``.

    The list must already have that entry (from the file or a whole-list variable). The value is
    read like pydantic-settings reads one: JSON for a list, mapping or section, an empty string
    for an optional key is null, anything else stays a string for pydantic to convert.
    """
    tp = annotation_at(path)
    value: Any = raw
    if tp is not UNKNOWN and is_optional(tp) and raw == "":
        value = None
    elif tp is not UNKNOWN and is_structured(tp):
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            out.errors.append(f"{source}: {render(path)}: not valid JSON ({exc})")
            return False
    node: Any = data
    for depth, part in enumerate(path):
        if isinstance(part, int) and not (isinstance(node, list) and part < len(node)):
            size = len(node) if isinstance(node, list) else 0
            problem = f"index {part} out of range ({size} entries configured)"
            out.errors.append(f"{source}: {render(path)}: {problem}")
            return False
        if isinstance(part, str) and not isinstance(node, dict):
            out.errors.append(f"{source}: {render(path)}: {render(path[:depth])} is not a mapping")
            return False
        if depth == len(path) - 1:
            node[part] = value
        else:
            if isinstance(part, str) and not isinstance(node.get(part), dict | list):
                node[part] = [] if isinstance(path[depth + 1], int) else {}
            node = node[part]
    return True


def _register(out: Collector, path: KeyPath, var: str) -> None:
    """Errors at or below ``path`` now name ``var`` (it replaced what the file said there)."""
    for known in [p for p in out.origins if p[: len(path)] == path]:
        del out.origins[known]
    out.origins[path] = Origin(f"env {var}", render(path))
