"""The plan of ``vkec2 infra``: desired resources against what AWS holds, and the plan as text.

:func:`plan` compares each desired :class:`~vkec2.domain.infra.Resource` with the properties read
back from AWS (same keys, JSON values) and says create, update (naming the properties that
differ), unchanged, or delete (a resource carrying the cluster's managed-by tags that is no
longer wanted, e.g. the pipeline role after a run without ``--with-pipeline``). :func:`render`
prints one line per resource and, for every policy document or rule set that would change, a
unified diff of its JSON (difflib). Pure: reading AWS is :mod:`vkec2.ec2.infra`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vkec2.domain.infra import KINDS, Resource

CREATE = "create"
UPDATE = "update"
UNCHANGED = "unchanged"
DELETE = "delete"
_MARKS = {CREATE: "+", UPDATE: "~", UNCHANGED: "=", DELETE: "-"}

Key = tuple[str, str]


@dataclass(frozen=True)
class Change:
    """What apply does to one resource; ``before``/``after`` are its properties (None: absent)."""

    action: str
    kind: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def fields(self) -> list[str]:
        """The properties that differ (all of them for a create or delete)."""
        before, after = self.before or {}, self.after or {}
        return [k for k in sorted(set(before) | set(after)) if _canon(before.get(k)) != _canon(after.get(k))]


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def plan(desired: Sequence[Resource], actual: Mapping[Key, dict[str, Any]]) -> list[Change]:
    """Changes in apply order: the desired resources first, then deletions of unwanted managed ones."""
    changes: list[Change] = []
    wanted = {r.key for r in desired}
    for resource in desired:
        before = actual.get(resource.key)
        if before is None:
            action = CREATE
        else:
            before = {k: before.get(k) for k in resource.spec}
            action = UNCHANGED if _canon(before) == _canon(resource.spec) else UPDATE
        changes.append(Change(action, resource.kind, resource.name, before, resource.spec))
    return changes + deletions({k: v for k, v in actual.items() if k not in wanted})


def deletions(actual: Mapping[Key, dict[str, Any]]) -> list[Change]:
    """Delete these resources, dependants first (the reverse of creation order)."""
    order = {kind: i for i, kind in enumerate(KINDS)}
    keys = sorted(actual, key=lambda k: (-order.get(k[0], len(KINDS)), k[1]))
    return [Change(DELETE, kind, name, actual[(kind, name)], None) for kind, name in keys]


def pending(changes: Sequence[Change]) -> list[Change]:
    """The changes that do something."""
    return [c for c in changes if c.action != UNCHANGED]


def render(changes: Sequence[Change]) -> str:
    """The plan as text: a line per resource, JSON diffs of changed documents, then a summary."""
    lines: list[str] = []
    for change in changes:
        what = f"{_MARKS[change.action]} {change.action:<9} {change.kind:<20} {change.name}"
        if change.action == UPDATE:
            what += f"  ({', '.join(change.fields)})"
        lines.append(what)
        if change.action in (CREATE, UPDATE):
            lines += _document_diffs(change)
    counts = {a: sum(1 for c in changes if c.action == a) for a in (CREATE, UPDATE, DELETE, UNCHANGED)}
    if not pending(changes):
        lines.append("no changes")
    else:
        lines.append(", ".join(f"{n} to {a}" for a, n in counts.items() if n and a != UNCHANGED))
    return "\n".join(lines)


def _document_diffs(change: Change) -> list[str]:
    """Unified diffs of the JSON of each changed document-like property (dicts: policies, rules)."""
    out: list[str] = []
    before, after = change.before or {}, change.after or {}
    for name in change.fields:
        old, new = before.get(name), after.get(name)
        if not isinstance(new, dict) and not isinstance(old, dict):
            out.append(f"      {name}: {json.dumps(old)} -> {json.dumps(new)}" if change.before else "")
            continue
        diff = difflib.unified_diff(
            _lines(old),
            _lines(new),
            f"{change.name} {name} (now)",
            f"{change.name} {name} (planned)",
            lineterm="",
        )
        out += [f"      {line}" for line in diff]
    return [line for line in out if line]


def _lines(value: Any) -> list[str]:
    return [] if value is None else json.dumps(value, indent=2, sort_keys=True).splitlines()
