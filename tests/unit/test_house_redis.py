"""House rule: one door to Redis. Only ``vkec2/store/`` names a key or calls the Redis client.

Everything else (the core's other packages, the Celery tasks, the producer) goes through the
store's intent-named methods, so the key schema, the Lua scripts and every read and write live in
one package. This test scans the source for the tell-tale uses — the client attribute
(``.redis``), ``redis.Redis``, ``register_script``, ``eval``, pipelines, the key schema (``Keys(``
or ``.keys.``) and importing the ``redis`` package — and fails naming each offending line. It also
checks that the patterns do find the store's own uses, so a broken pattern cannot pass silently.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("vkec2", "tasks", "producer")
STORE = ROOT / "vkec2" / "store"

FORBIDDEN = {
    "the Redis client attribute": re.compile(r"\.redis\b"),
    "the Redis client class": re.compile(r"\bredis\.(Strict)?Redis\b"),
    "a Lua script": re.compile(r"\bregister_script\b|\.eval(sha)?\("),
    "a pipeline": re.compile(r"\.pipeline\("),
    "the key schema": re.compile(r"\bKeys\(|\.keys\."),
    "the redis package": re.compile(r"^\s*(import redis\b|from redis\b)"),
}


def _hits(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}")
    return found


def _sources() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))


def test_only_the_store_touches_redis() -> None:
    outside = [p for p in _sources() if STORE not in p.parents]
    assert len(outside) > 50, "the scan found too few modules; are the paths right?"
    offenders = [hit for path in outside for hit in _hits(path)]
    assert not offenders, "Redis used outside vkec2/store/ (add a store method instead):\n" + "\n".join(
        offenders
    )


def test_the_patterns_find_the_stores_own_redis_calls() -> None:
    inside = [hit for path in _sources() if STORE in path.parents for hit in _hits(path)]
    for what in FORBIDDEN:
        assert any(f": {what}: " in hit for hit in inside), f"no store module matched {what!r}"
