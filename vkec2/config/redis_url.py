"""Where the fleet's Redis is: a plain ``redis://`` server, or a master found through Redis Sentinel.

``redis_url`` takes the forms Celery users know: ``redis://``, ``rediss://`` and ``unix://`` name
one server; ``sentinel://[[user]:password@]host[:port][/db]`` — several joined by ``;``, as
kombu reads them — name the Sentinels that know the master called ``redis_sentinel_master``.
Only the first Sentinel URL may carry the credentials and the database (kombu reads them from
there); they are the master's, not the Sentinels'. :func:`parse_redis_url` checks a URL and says
what is wrong with it (never its password: :func:`~vkec2.config.redaction.redact`);
:class:`RedisTarget` is the parsed answer the store and the broker configuration (kombu, RedBeat)
build their clients from.
See docs/redis.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from vkec2.config.redaction import redact

#: The port of a Sentinel named without one (the Sentinel default, as kombu assumes).
SENTINEL_PORT = 26379
PLAIN_SCHEMES = frozenset({"redis", "rediss", "unix"})

#: ``text`` with every URL's password shown as ``***``: the one helper of vkec2.config.redaction.
redact_url = redact


@dataclass(frozen=True)
class RedisTarget:
    """A checked ``redis_url``; ``sentinels`` is empty when it names one server."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = None
    db: int = 0

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)


def _sentinel(raw: str, first: bool) -> tuple[SplitResult, tuple[str, int]]:
    split, part = urlsplit(raw), redact_url(raw)
    if split.scheme != "sentinel":
        raise ValueError(f"{part!r}: every URL of a Sentinel list must be sentinel://host:port")
    try:
        port = split.port or SENTINEL_PORT
    except ValueError:
        raise ValueError(f"{part!r}: the port is not a number from 0 to 65535") from None
    if not split.hostname:
        raise ValueError(f"{part!r}: names no Sentinel host")
    if split.query or split.fragment:
        raise ValueError(f"{part!r}: a sentinel:// URL takes no ?query or #fragment (use the settings)")
    if not first and (split.username or split.password or split.path.strip("/")):
        raise ValueError(f"{part!r}: only the first sentinel:// URL may carry a password and a /db")
    return split, (split.hostname, port)


def parse_redis_url(url: str) -> RedisTarget:
    """Check ``url`` and return what it names; ValueError names the problem."""
    scheme = urlsplit(url).scheme
    if scheme in PLAIN_SCHEMES:
        return RedisTarget(url)
    if scheme != "sentinel":
        named = scheme or "a URL without scheme"
        raise ValueError(f"must be a redis://, rediss://, unix:// or sentinel:// URL, not {named}")
    parts = [part.strip() for part in url.split(";")]
    if not all(parts):
        raise ValueError("an empty entry in the ';'-separated list of sentinel:// URLs")
    checked = [_sentinel(part, index == 0) for index, part in enumerate(parts)]
    first = checked[0][0]
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database of {redact_url(parts[0])!r} must be a number, not {path!r}")
    return RedisTarget(
        url=url,
        sentinels=tuple(address for _, address in checked),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
        db=int(path or 0),
    )


def check_sentinel_master(target: RedisTarget, master: str | None) -> None:
    """A Sentinel URL needs the master's name and a plain one takes none; ValueError says which."""
    if target.is_sentinel and master is None:
        raise ValueError("redis_url names Redis Sentinel: set redis_sentinel_master to the master's name")
    if not target.is_sentinel and master is not None:
        raise ValueError("redis_sentinel_master is set but redis_url is not a sentinel:// URL")
