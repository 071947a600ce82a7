"""An HTTP proxy in front of moto's EC2 server that counts calls, honours ClientToken and can throttle.

moto's EC2 ignores ``ClientToken``; this small fake adds AWS's documented idempotency semantics on
top of it: a ``RunInstances`` with a token already seen and the same parameters returns the first
call's response (the same instance) without launching again; the same token with different
parameters fails with ``IdempotentParameterMismatch`` (HTTP 400). It also counts every request by
EC2 ``Action`` (the figure tests assert on, "counted at the endpoint"), and can answer a chosen
fraction of requests with ``RequestLimitExceeded`` (HTTP 503, as EC2 does) to exercise throttling,
and can report chosen instances as failing their instance status check in ``DescribeInstanceStatus``
(moto always answers "ok"), to exercise the remediation of impaired instances.

What it does not model: token expiry (AWS keeps tokens for at least 24 hours; here they last as
long as the proxy), per-account token scoping, tokens on APIs other than RunInstances, request
signing (it forwards the caller's headers unchanged), and EC2's real rate limits.
"""

from __future__ import annotations

import hashlib
import random
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler
from xml.etree import ElementTree

from tests.support.loopback import LoopbackServer

THROTTLE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>'
    b"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
)
MISMATCH_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>IdempotentParameterMismatch'
    b"</Code><Message>The client token has already been used with different parameters.</Message>"
    b"</Error></Errors><RequestID>proxy</RequestID></Response>"
)


class Ec2Proxy(LoopbackServer):
    """Start with :meth:`start`; point the fleet's ``aws.endpoint_url`` at :attr:`url`."""

    def __init__(self, upstream: str, *, throttle_fraction: float = 0.0, seed: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.throttle_fraction = throttle_fraction
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.tokens: dict[str, tuple[str, bytes]] = {}
        self.impaired: set[str] = set()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._launch_lock = threading.Lock()  # token check, launch and record happen as one step
        super().__init__()

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.throttled.clear()

    def _decide(self, body: bytes) -> tuple[str, bytes | None]:
        """Count the call; return (action, canned response or None to forward)."""
        params = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        action = params.get("Action", ["?"])[0]
        with self._lock:
            self.calls[action] += 1
            if self.throttle_fraction and self._random.random() < self.throttle_fraction:
                self.throttled[action] += 1
                return action, THROTTLE_BODY
            if action == "RunInstances" and "ClientToken" in params:
                token = params["ClientToken"][0]
                fingerprint = hashlib.sha256(
                    repr(sorted((k, v) for k, v in params.items() if k != "ClientToken")).encode()
                ).hexdigest()
                if token in self.tokens:
                    seen, response = self.tokens[token]
                    return action, (response if seen == fingerprint else MISMATCH_BODY)
        return action, None

    def _impair(self, payload: bytes) -> bytes:
        """Mark the instances in :attr:`impaired` as failing their instance status check."""
        ns = "http://ec2.amazonaws.com/doc/2016-11-15"
        root = ElementTree.fromstring(payload)
        with self._lock:
            impaired = set(self.impaired)
        for item in root.iterfind(f"{{{ns}}}instanceStatusSet/{{{ns}}}item"):
            status = item.find(f"{{{ns}}}instanceStatus/{{{ns}}}status")
            if item.findtext(f"{{{ns}}}instanceId") in impaired and status is not None:
                status.text = "impaired"
        ElementTree.register_namespace("", ns)
        return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))

    def _remember(self, body: bytes, response: bytes) -> None:
        params = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        token = params["ClientToken"][0]
        fingerprint = hashlib.sha256(
            repr(sorted((k, v) for k, v in params.items() if k != "ClientToken")).encode()
        ).hexdigest()
        with self._lock:
            self.tokens.setdefault(token, (fingerprint, response))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _send(self, status: int, body: bytes, content_type: str = "text/xml") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if b"Action=RunInstances" in body and b"ClientToken=" in body:
                    with proxy._launch_lock:
                        self._serve(body)
                else:
                    self._serve(body)

            def _serve(self, body: bytes) -> None:
                action, canned = proxy._decide(body)
                if canned is THROTTLE_BODY:
                    self._send(503, canned)
                    return
                if canned is MISMATCH_BODY:
                    self._send(400, canned)
                    return
                if canned is not None:
                    self._send(200, canned)
                    return
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as upstream:
                        status, payload = upstream.status, upstream.read()
                        ctype = upstream.headers.get("Content-Type", "text/xml")
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, exc.read()
                    ctype = exc.headers.get("Content-Type", "text/xml")
                if action == "DescribeInstanceStatus" and status == 200 and proxy.impaired:
                    payload = proxy._impair(payload)
                if action == "RunInstances" and status == 200 and b"ClientToken=" in body:
                    proxy._remember(body, payload)
                self._send(status, payload, ctype)

        return Handler
