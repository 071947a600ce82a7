"""A small fake of the AWS Service Quotas API for tests: GetServiceQuota and ListServiceQuotas over HTTP.

moto's Service Quotas knows only a few ``vpc`` quota codes, not EC2's, so the quota refresh is
tested against this server instead. It speaks the JSON 1.1 protocol boto3 uses
(``POST /`` with ``X-Amz-Target: ServiceQuotasV20190624.<Operation>``) on a free loopback port.

What it models: a table of ``(ServiceCode, QuotaCode) -> Value`` set by the test; GetServiceQuota
answers a known code with a ``Quota`` object (ServiceCode, QuotaCode, QuotaName, QuotaArn, Value,
Unit, Adjustable, GlobalQuota) and an unknown one with ``NoSuchResourceException`` (HTTP 400);
ListServiceQuotas returns every quota of a service in one page; ``unavailable = True`` makes every
call fail with ``ServiceUnavailableException`` (HTTP 503, which boto3 retries), and ``calls`` counts
requests by operation. What it does not model: request signing and credentials (any are accepted),
pagination, AWS default quotas (GetAWSDefaultServiceQuota), quota increase requests, usage metrics,
regions and accounts (one table for all), and the real quota names beyond what the test supplies.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackServer

TARGET_PREFIX = "ServiceQuotasV20190624."


class QuotasFake(LoopbackServer):
    """Start with :meth:`start`; point ``quotas.endpoint_url`` at :attr:`url`."""

    def __init__(self, quotas: dict[tuple[str, str], float] | None = None) -> None:
        self.quotas: dict[tuple[str, str], float] = dict(quotas or {})
        self.unavailable = False
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        super().__init__()

    def _quota(self, service: str, code: str, value: float) -> dict[str, Any]:
        return {
            "ServiceCode": service,
            "ServiceName": service.upper(),
            "QuotaCode": code,
            "QuotaName": f"fake quota {code}",
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
            "QuotaArn": f"arn:aws:servicequotas:us-west-2:123456789012:{service}/{code}",
        }

    def answer(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls[operation] += 1
            if self.unavailable:
                return 503, {"__type": "ServiceUnavailableException", "message": "fake: service unavailable"}
            service = str(body.get("ServiceCode", ""))
            if operation == "GetServiceQuota":
                code = str(body.get("QuotaCode", ""))
                if (service, code) not in self.quotas:
                    return 400, {
                        "__type": "NoSuchResourceException",
                        "message": f"The request failed because the specified quota {code} "
                        f"of service {service} does not exist.",
                    }
                return 200, {"Quota": self._quota(service, code, self.quotas[(service, code)])}
            if operation == "ListServiceQuotas":
                return 200, {
                    "Quotas": [
                        self._quota(s, c, v) for (s, c), v in sorted(self.quotas.items()) if s == service
                    ]
                }
        return 400, {"__type": "InvalidParameterValueException", "message": f"fake: {operation} not modelled"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else target
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                status, payload = fake.answer(operation, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
