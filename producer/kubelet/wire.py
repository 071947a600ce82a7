"""HTTP pieces of the kubelet API: error answers, Kubernetes query values, chunked-body framing.

:class:`HttpError` is how every handler refuses a request (status, Kubernetes reason, message);
:func:`error_body` renders it as the kubelet does — plain text, which the API server passes on as
the message ``kubectl`` prints, or a v1 ``Status`` for a client that accepts JSON.
:func:`agent_http_error` maps the agent client's errors onto those answers, :func:`query_bool`
and :func:`query_int` read query parameters by Kubernetes' rules, and :func:`remote_command_query`
reads and checks an exec or attach request's (over WebSocket or SPDY alike).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from vkec2.errors import AgentError, AgentIdentityMismatch, AgentRejected, AgentUnavailable

Query = Mapping[str, list[str]]
"""A parsed query string (:func:`urllib.parse.parse_qs`)."""


class HttpError(Exception):
    """An error answer: HTTP status, Kubernetes reason, message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def bad_request(message: str) -> HttpError:
    return HttpError(400, "BadRequest", message)


def agent_http_error(exc: AgentError) -> HttpError:
    """The agent's refusal is the client's bad request; an unreachable agent is a 503."""
    if isinstance(exc, AgentRejected):
        return bad_request(str(exc))
    if isinstance(exc, AgentUnavailable | AgentIdentityMismatch):
        return HttpError(503, "ServiceUnavailable", str(exc))
    return HttpError(500, "InternalError", str(exc))


def error_body(err: HttpError, accept: str) -> tuple[bytes, str]:
    """Body and content type of an error answer: plain text like the kubelet, or a ``Status``."""
    if "application/json" in accept:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": err.message,
            "reason": err.reason,
            "code": err.code,
        }
        return json.dumps(status).encode(), "application/json"
    return (err.message + "\n").encode(), "text/plain; charset=utf-8"


def query_bool(query: Query, name: str) -> bool:
    """Kubernetes query booleans: absent is false; ``0``/``f``/``false`` are false; anything else true."""
    values = query.get(name)
    if not values:
        return False
    return values[0].lower() not in ("0", "f", "false")


def query_int(query: Query, name: str, minimum: int) -> int | None:
    """An optional integer parameter of at least ``minimum``; anything else is a 400."""
    values = query.get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        raise bad_request(f"{name}: {values[0]!r} is not an integer") from None
    if value < minimum:
        raise bad_request(f"{name}: must be greater than or equal to {minimum}, got {value}")
    return value


def chunk(data: bytes) -> bytes:
    """One chunk of a ``Transfer-Encoding: chunked`` body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
"""The end of a chunked body (no trailers)."""


@dataclass(frozen=True)
class RemoteCommand:
    """What an exec or attach asks for: the command (empty for attach) and the streams."""

    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def remote_command_query(query: Query, *, attach: bool = False) -> RemoteCommand:
    """The exec/attach query, checked as the kubelet checks it (a 400 naming what is missing)."""
    command = [] if attach else list(query.get("command") or [])
    if not attach and not command:
        raise bad_request("you must specify at least one command for the container")
    asked = RemoteCommand(
        command,
        query_bool(query, "stdin"),
        query_bool(query, "stdout"),
        query_bool(query, "stderr"),
        query_bool(query, "tty"),
    )
    if not (asked.stdin or asked.stdout or asked.stderr):
        raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
    return asked
