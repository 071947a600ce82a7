"""Quota refresh: the account's Service Quotas turned into the virtual node's capacity, for the producer.

:meth:`QuotaRefresh.refresh` (the body of ``vkec2.maintenance.quotas``) reads the configured quota
codes with Service Quotas ``GetServiceQuota`` (vCPU quotas such as L-1216C47A, On-Demand Standard
instances, summed; dedicated-host quotas per instance family, e.g. for Mac instances, which
run one per host: ``quotas.host_codes`` plus the known Mac code of every host pool's family, also
stored for the host pools' allocations) and the vCPUs and memory of the configured instance types with EC2
``DescribeInstanceTypes``. For each type the quota allows ``n`` instances (hosts for a family with a
host quota, else vCPU quota // the type's vCPUs); the node offers ``pods`` = the largest ``n``, and
``cpu``/``memory`` = the largest ``n`` x the type's vCPUs/memory, since one pod gets one instance.
The result goes to the ``capacity`` hash (cpu, memory, pods, source, reason, updated_at). When the
API is unavailable, refused, or does not know a code, the configured ``node`` capacity is stored
instead with ``source=config`` and the reason, which is also logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from vkec2.config import Settings
from vkec2.config.hosts import host_quota_codes
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.errors import Ec2Error
from vkec2.store.redis_store import Store

if TYPE_CHECKING:
    from types_boto3_service_quotas import ServiceQuotasClient

log = logging.getLogger("vkec2.fleet.quotas")

SOURCE_QUOTAS = "service-quotas"
SOURCE_CONFIG = "config"


@dataclass(frozen=True)
class Capacity:
    cpu: str
    memory: str
    pods: str
    source: str
    reason: str = ""

    def fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


class QuotaUnavailable(Exception):
    """Service Quotas (or DescribeInstanceTypes) could not give an answer."""


class QuotaRefresh:
    """Computes and stores node capacity from quotas for one cluster."""

    def __init__(
        self, settings: Settings, store: Store, ec2: Ec2Gateway, client: ServiceQuotasClient | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.ec2 = ec2
        self._client = client

    @property
    def client(self) -> ServiceQuotasClient:
        if self._client is None:
            aws = self.settings.aws
            config = botocore.config.Config(
                region_name=self.settings.region,
                connect_timeout=aws.connect_timeout_seconds,
                read_timeout=aws.read_timeout_seconds,
                retries={"mode": "standard", "max_attempts": 2},
            )
            endpoint = self.settings.quotas.endpoint_url or aws.endpoint_url
            self._client = boto3.session.Session().client(
                "service-quotas", endpoint_url=endpoint, config=config
            )
        return self._client

    def instance_types(self) -> list[str]:
        configured = self.settings.quotas.instance_types
        if configured:
            return sorted(set(configured))
        hosted = (p.instance_type for p in self.settings.host_pools if p.instance_type)
        return sorted(
            {self.settings.ec2.instance_type, *(p.instance_type for p in self.settings.warm_pools), *hosted}
        )

    def configured(self, reason: str) -> Capacity:
        node = self.settings.node
        return Capacity(cpu=node.cpu, memory=node.memory, pods=node.pods, source=SOURCE_CONFIG, reason=reason)

    def _quota(self, code: str) -> float:
        try:
            answer = self.client.get_service_quota(
                ServiceCode=self.settings.quotas.service_code, QuotaCode=code
            )
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise QuotaUnavailable(
                f"GetServiceQuota {code}: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
            ) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise QuotaUnavailable(f"GetServiceQuota {code}: {exc}") from exc
        value = answer.get("Quota", {}).get("Value")
        if value is None:
            raise QuotaUnavailable(f"GetServiceQuota {code}: the answer has no value")
        return float(value)

    def from_quotas(self) -> Capacity:
        quotas = self.settings.quotas
        vcpus = sum(self._quota(code) for code in quotas.codes)
        host_codes = host_quota_codes(self.settings.host_pools, quotas.host_codes)
        hosts = {family: self._quota(code) for family, code in host_codes.items()}
        self.store.put_host_quotas(hosts)  # the host pools' allocations stay within them (vkec2.fleet.hosts)
        types = self.instance_types()
        try:
            info = self.ec2.describe_instance_types(types)
        except Ec2Error as exc:
            raise QuotaUnavailable(f"DescribeInstanceTypes: {exc.message}") from exc
        missing = [t for t in types if t not in info]
        if missing:
            raise QuotaUnavailable(f"DescribeInstanceTypes does not know {', '.join(missing)}")
        best: tuple[int, int, int] = (0, 0, 0)  # pods, cpu, memory MiB
        parts: list[str] = []
        for name in types:
            desc: dict[str, Any] = info[name]
            type_vcpus = int(desc.get("VCpuInfo", {}).get("DefaultVCpus", 0))
            memory_mib = int(desc.get("MemoryInfo", {}).get("SizeInMiB", 0))
            if type_vcpus <= 0:
                raise QuotaUnavailable(f"DescribeInstanceTypes gives no vCPUs for {name}")
            family = name.split(".", 1)[0]
            count = int(hosts[family]) if family in hosts else int(vcpus // type_vcpus)
            parts.append(f"{name}: {count} x {type_vcpus} vCPU / {memory_mib} MiB")
            best = max(best, (count, count * type_vcpus, count * memory_mib))
        pods, cpu, memory = best
        codes = ", ".join([*quotas.codes, *host_codes.values()])
        return Capacity(
            cpu=str(cpu),
            memory=f"{memory}Mi",
            pods=str(pods),
            source=SOURCE_QUOTAS,
            reason=f"{vcpus:g} vCPUs by {codes}; " + "; ".join(parts),
        )

    def refresh(self) -> Capacity:
        """Compute the capacity (or fall back to the configured one) and store it for the producer."""
        if not self.settings.quotas.enabled:
            capacity = self.configured("quota refresh disabled (quotas.enabled=false)")
        else:
            try:
                capacity = self.from_quotas()
            except QuotaUnavailable as exc:
                capacity = self.configured(f"Service Quotas unavailable: {exc}")
                log.warning("node capacity from configuration: %s", capacity.reason)
        self.store.put_capacity({**capacity.fields(), "updated_at": repr(time.time())})
        self.store.clear_quota_marks()  # quotas may have been raised: launches refused for one retry now
        log.info(
            "node capacity cpu=%s memory=%s pods=%s (source %s)",
            capacity.cpu,
            capacity.memory,
            capacity.pods,
            capacity.source,
        )
        return capacity
