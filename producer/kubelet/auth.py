"""Who may use the kubelet API: authentication, authorization and stream caps, as the kubelet's webhook mode.

Authentication tries, in the kubelet's order, a verified client certificate (``--kubelet-client-ca``:
the user is the subject's CN, the groups its O values) and then a bearer token checked with a
``TokenReview`` (:class:`Reviewer`); a request with neither is a 401 (anonymous access is off).
Authorization asks a ``SubjectAccessReview`` for every request with the user's name, UID, groups
and extra, the verb of the HTTP method and the node's subresource the path names
(:func:`request_attributes`); a denial is a 403 naming user, verb, resource and subresource, a
failed review a 500. Decisions are cached briefly as the kubelet does (token reviews 2 min,
authenticated or not; allowed 5 min, denied 30 s; all configurable) in :class:`TtlCache`, a small
bounded map written here because the project has no caching library and the entries need per-kind
lifetimes and nothing else.
:class:`StreamLimits` caps concurrent requests per client and in total (429). Standalone mode has no
API server to ask, so :class:`AllowAuthenticated` lets in any authenticated client.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from producer.kubelet.wire import HttpError

log = logging.getLogger("producer.kubelet")

K = TypeVar("K")
V = TypeVar("V")

_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"))


@dataclass(frozen=True)
class User:
    """An authenticated client as Kubernetes names it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(cls, name: str, uid: str = "", groups: Any = (), extra: Mapping[str, Any] | None = None) -> User:
        """A user from loosely typed review fields (``None`` lists become empty)."""
        pairs = tuple(sorted((str(k), tuple(str(x) for x in v or ())) for k, v in (extra or {}).items()))
        return cls(str(name), str(uid or ""), tuple(str(g) for g in groups or ()), pairs)


@dataclass(frozen=True)
class Attributes:
    """What a request does, as a SubjectAccessReview on ``nodes`` asks it."""

    verb: str
    subresource: str
    node: str
    resource: str = "nodes"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def request_attributes(method: str, path: str, node: str) -> Attributes:
    """The kubelet's mapping: verb from the method; ``/pods``, ``/stats``, ``/logs``... else ``proxy``.

    Exec, attach, port-forward, container logs and ``/run`` are all ``nodes/proxy``, so whoever may
    read a node's proxy may exec into its pods (as with the real kubelet).
    """
    verb = _VERBS.get(method.upper(), method.lower())
    path = "/" + path.lstrip("/")
    if _under(path, "/pods"):
        return Attributes(verb, "pods", node)
    for prefix, sub in _SUBRESOURCES:
        if _under(path, prefix):
            return Attributes(verb, sub, node)
    return Attributes(verb, "proxy", node)


class TtlCache(Generic[K, V]):
    """A thread-safe map whose entries expire after their own lifetime; the oldest go past ``size``."""

    def __init__(self, size: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._data[key]
                return None
            return entry[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._data[key] = (self.clock() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class Reviewer(Protocol):
    """The API server's review endpoints (``TokenReview``, ``SubjectAccessReview``)."""

    def review_token(self, token: str) -> User | None:
        """The token's user, or ``None`` when the API server does not authenticate it."""
        ...

    def review_access(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) of the request; raises when the review itself fails."""
        ...


class Authorizer(Protocol):
    def authorize(self, user: User, attrs: Attributes) -> None:
        """Return if ``user`` may do ``attrs``; raise :class:`HttpError` (403 or 500) otherwise."""
        ...


def forbidden(user: User, attrs: Attributes, reason: str = "") -> HttpError:
    """The kubelet's 403 message (the API server passes it on to ``kubectl``)."""
    text = (
        f"Forbidden (user={user.name}, verb={attrs.verb}, resource={attrs.resource}, "
        f"subresource={attrs.subresource})"
    )
    return HttpError(403, "Forbidden", text + (f": {reason}" if reason else ""))


class AllowAuthenticated:
    """Standalone mode: any authenticated client may do anything (no API server to ask)."""

    def authorize(self, user: User, attrs: Attributes) -> None:
        return None


@dataclass
class WebhookAuthorizer:
    """A ``SubjectAccessReview`` per request; decisions cached (allowed and denied apart)."""

    reviewer: Reviewer
    allowed_ttl: float = 300.0
    denied_ttl: float = 30.0
    cache: TtlCache[tuple[User, Attributes], tuple[bool, str]] = field(default_factory=TtlCache)

    def authorize(self, user: User, attrs: Attributes) -> None:
        key = (user, attrs)
        decision = self.cache.get(key)
        if decision is None:
            try:
                decision = self.reviewer.review_access(user, attrs)
            except Exception as exc:
                log.warning("kubelet API: SubjectAccessReview for %s failed: %s", user.name, _why(exc))
                raise HttpError(
                    500,
                    "InternalError",
                    f"Authorization error (user={user.name}, verb={attrs.verb}, resource={attrs.resource}, "
                    f"subresource={attrs.subresource})",
                ) from None
            self.cache.put(key, decision, self.allowed_ttl if decision[0] else self.denied_ttl)
        if not decision[0]:
            raise forbidden(user, attrs, decision[1])


@dataclass
class Authenticator:
    """Client certificate first, then bearer token (TokenReview, cached); nothing else is accepted."""

    x509: bool = False
    reviewer: Reviewer | None = None
    token_ttl: float = 120.0
    cache: TtlCache[str, tuple[User | None]] = field(default_factory=TtlCache)

    def authenticate(self, peer_cert: Mapping[str, Any] | None, authorization: str | None) -> User:
        """The request's user, or a 401 (``peer_cert`` is :meth:`ssl.SSLSocket.getpeercert`'s, verified)."""
        if self.x509 and peer_cert:
            user = user_of_certificate(peer_cert)
            if user is not None:
                return user
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if self.reviewer is not None and scheme.lower() == "bearer" and token:
            key = hashlib.sha256(token.encode()).hexdigest()  # never keep the token itself
            cached = self.cache.get(key)
            if cached is None:  # unknown tokens are remembered too: no review per request of a flood
                try:
                    cached = (self.reviewer.review_token(token),)
                except Exception as exc:
                    log.warning("kubelet API: TokenReview failed: %s", _why(exc))
                    raise unauthorized() from None
                self.cache.put(key, cached, self.token_ttl)
            if cached[0] is not None:
                return cached[0]
        raise unauthorized()


def _why(exc: Exception) -> str:
    """A failed review in a log line: its type and HTTP status only (an answer body may echo the token)."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    return " ".join(str(x) for x in (type(exc).__name__, status, reason) if x)


def unauthorized() -> HttpError:
    return HttpError(401, "Unauthorized", "Unauthorized")


def user_of_certificate(cert: Mapping[str, Any]) -> User | None:
    """CN → user name, O → groups, as Kubernetes reads a client certificate; no CN: no user."""
    name, groups = "", []
    for rdn in cert.get("subject") or ():
        for key, value in rdn:
            if key == "commonName" and not name:
                name = str(value)
            elif key == "organizationName":
                groups.append(str(value))
    return User.of(name, groups=groups) if name else None


class StreamLimits:
    """Caps on concurrent requests per client and in total; over a cap the answer is a 429."""

    def __init__(self, per_client: int = 128, total: int = 256) -> None:
        self.per_client = per_client
        self.total = total
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._all = 0

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        with self._lock:
            if self._all >= self.total:
                raise HttpError(
                    429, "TooManyRequests", f"too many concurrent requests on this node (limit {self.total})"
                )
            if self._open.get(client, 0) >= self.per_client:
                raise HttpError(
                    429,
                    "TooManyRequests",
                    f"too many concurrent requests from {client} (limit {self.per_client} per client)",
                )
            self._open[client] = self._open.get(client, 0) + 1
            self._all += 1
        try:
            yield
        finally:
            with self._lock:
                self._all -= 1
                left = self._open[client] - 1
                if left:
                    self._open[client] = left
                else:
                    del self._open[client]


@dataclass
class Gate:
    """Everything the server checks before routing; ``authenticator=None`` serves anyone (insecure)."""

    authenticator: Authenticator | None
    authorizer: Authorizer
    limits: StreamLimits = field(default_factory=StreamLimits)

    @property
    def open(self) -> bool:
        return self.authenticator is None

    @contextlib.contextmanager
    def admit(
        self,
        *,
        method: str,
        path: str,
        node: str,
        peer_cert: Mapping[str, Any] | None,
        authorization: str | None,
        address: str,
    ) -> Iterator[User | None]:
        """Authenticate, authorize and count one request; raises :class:`HttpError` when refused."""
        user: User | None = None
        if self.authenticator is not None:
            user = self.authenticator.authenticate(peer_cert, authorization)
            self.authorizer.authorize(user, request_attributes(method, path, node))
        with self.limits.hold(f"user {user.name}" if user is not None else f"address {address}"):
            yield user
