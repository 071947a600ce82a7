"""The EC2 gateway: every EC2 call the fleet makes goes through here, on full Instance descriptions.

Instances are tagged at launch (``TagSpecifications``) with cluster, virtual node, pod UID and pod
namespace/name, so the tags are the durable record of which pod an instance belongs to: before
launching, the gateway looks the pod's instance up by tag and adopts it. ``RunInstances`` carries a
``ClientToken`` derived from the pod UID and attempt, so a retried call returns the same instance
instead of a second one (tags, token and the Instance type live in :mod:`vkec2.domain.instances`;
the request itself, IMDSv2 and volumes included, is :mod:`vkec2.domain.runinstances`, and an AMI's
root device is read with DescribeImages once per process when a root volume needs it).
EC2 is eventually consistent: for seconds after RunInstances it may answer
``InvalidInstanceID.NotFound`` for the new instance and leave it out of filtered listings, so
``terminate`` reports the IDs EC2 did not know and lets the lifecycle decide (a young instance is
*not yet visible*, an old one is gone); listings are read with boto3's paginators. The
boto3 client is created lazily once per process (after a fork, a new one), with adaptive retries,
connect/read timeouts and the endpoint URL from config, timestamps parsed by the standard library
(:func:`parse_timestamp`), and with
:class:`~vkec2.ec2.accounting.CallAccounting` hooked into its events: every attempt draws a token
from the fleet-wide rate limiter and every call is counted (Prometheus and Redis).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.session
import botocore.utils

from vkec2.config import Settings
from vkec2.contract import CAPACITY_ERROR_CODES, TAG_CLUSTER, TAG_POD_UID
from vkec2.domain.instances import LIVE_STATES, Instance, pod_tags
from vkec2.domain.launchopts import RootDevice, needs_root_device, root_device_of
from vkec2.domain.podspec import LaunchParams
from vkec2.domain.runinstances import run_instances_request
from vkec2.ec2.accounting import THROTTLE_CODES, CallAccounting
from vkec2.ec2.hosts import HostCalls
from vkec2.errors import Ec2Error

if TYPE_CHECKING:
    from types_boto3_ec2 import EC2Client

    from vkec2.store.redis_store import Store

log = logging.getLogger(__name__)

DESCRIBE_BATCH = 1000
INSTANCE_ID_RE = re.compile(r"\bi-[0-9a-f]{8,17}\b")
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
#: EC2's own transient failures (after botocore's retries): retried later by the task, like throttles.
SERVER_ERROR_CODES = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "RequestTimeout"}
)


def parse_timestamp(value: str) -> datetime:
    """A timestamp of an EC2 answer (ISO 8601 with a zone, as EC2 writes them) by the standard library.

    botocore's default parser goes through dateutil at about 0.2 ms a value; an instance carries
    three (launch and attach times), so that was most of the CPU of parsing a 1,000-instance
    DescribeInstances (bench/notes/sweep.md). Any other form goes to botocore's parser.
    """
    try:
        parsed = datetime.fromisoformat(value)  # the trailing "Z" is accepted since Python 3.11
    except (TypeError, ValueError):
        return botocore.utils.parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else botocore.utils.parse_timestamp(value)


def boto3_session() -> boto3.session.Session:
    """A boto3 session whose clients parse timestamps with :func:`parse_timestamp`."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return boto3.session.Session(botocore_session=core)


def jsonable(instance: Mapping[str, Any]) -> Instance:
    """An Instance description with datetimes as ISO strings, ready to store as JSON."""

    def conv(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, Mapping):
            return {k: conv(v) for k, v in value.items()}
        if isinstance(value, list):
            return [conv(v) for v in value]
        return value

    return conv(dict(instance))  # type: ignore[no-any-return]


@contextmanager
def _ec2_errors(action: str) -> Iterator[None]:
    """Raise the botocore errors of ``action`` as :class:`Ec2Error` (throttles and network: retryable;
    capacity and quota answers: retryable with ``capacity`` set, their code as the reason)."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        throttled = code in THROTTLE_CODES
        capacity = code in CAPACITY_ERROR_CODES
        server = code in SERVER_ERROR_CODES
        raise Ec2Error(
            f"{action}: {code}: {exc.response.get('Error', {}).get('Message', '')}",
            code=code,
            retryable=throttled or server,
            reason="EC2Throttled"
            if throttled
            else ("EC2Unavailable" if server else (code if capacity else None)),
            capacity=capacity,
        ) from exc
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise Ec2Error(f"{action}: {exc}", retryable=True, reason="EC2Unreachable") from exc


class Ec2Gateway(HostCalls):
    """EC2 operations of one cluster, with call accounting and an optional fleet-wide rate limiter."""

    def __init__(
        self, settings: Settings, store: Store | None = None, limiter: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.limiter = limiter
        self._clients: dict[str, EC2Client] = {}
        self._account: str | None = None
        self._pid = 0
        self._mutex = threading.Lock()
        self._zones: dict[str, str] = {}  # subnet ID -> Availability Zone
        self._zones_lock = threading.Lock()  # one DescribeSubnets per process, not one per thread
        self._images: dict[str, RootDevice | None] = {}  # AMI ID -> its root device (DescribeImages)
        self._images_lock = threading.Lock()

    @property
    def client(self) -> EC2Client:
        """This process's client, with botocore's adaptive retries."""
        return self._client_for("calls", self.settings.aws.max_attempts)

    @property
    def launch_client(self) -> EC2Client:
        """This process's client for RunInstances: one attempt, no botocore retries.

        EC2 answers a capacity error (InsufficientInstanceCapacity ...) with HTTP 500, which
        botocore retries like any server error: each refusal would cost ``aws.max_attempts``
        launches under the pod's lock. The capacity fallback moves on at once instead, and a
        throttled launch is retried by the task with a back-off.
        """
        return self._client_for("launch", 1)

    def _client_for(self, purpose: str, max_attempts: int) -> EC2Client:
        if self._pid != os.getpid():
            with self._mutex:
                if self._pid != os.getpid():
                    self._clients, self._pid = {}, os.getpid()  # a forked child starts afresh
        client = self._clients.get(purpose)
        if client is None:
            with self._mutex:
                client = self._clients.get(purpose)
                if client is None:
                    aws = self.settings.aws
                    config = botocore.config.Config(
                        region_name=self.settings.region,
                        connect_timeout=aws.connect_timeout_seconds,
                        read_timeout=aws.read_timeout_seconds,
                        retries={"mode": "adaptive", "total_max_attempts": max_attempts},
                        max_pool_connections=32,
                    )
                    client = boto3_session().client("ec2", endpoint_url=aws.endpoint_url, config=config)
                    CallAccounting(self.store, self.limiter).register(client.meta.events)
                    self._clients[purpose] = client
        return client

    def account_id(self) -> str:
        """The AWS account of these credentials (STS GetCallerIdentity, asked once per process)."""
        if self._account is None:
            aws = self.settings.aws
            config = botocore.config.Config(
                region_name=self.settings.region,
                connect_timeout=aws.connect_timeout_seconds,
                read_timeout=aws.read_timeout_seconds,
            )
            sts = boto3.session.Session().client("sts", endpoint_url=aws.endpoint_url, config=config)
            with _ec2_errors("GetCallerIdentity"):
                self._account = str(sts.get_caller_identity()["Account"])
        return self._account

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """One EC2 call ``action`` (``fn`` with ``kwargs``), its errors as :class:`Ec2Error`."""
        with _ec2_errors(action):
            return fn(**kwargs)

    def _paged_call(self, action: str, paginator: Any, items: str, **kwargs: Any) -> list[Any]:
        """Every item (JMESPath ``items``) of every page of ``action`` read with its boto3 paginator."""
        with _ec2_errors(action):
            return list(paginator.paginate(**kwargs).search(items))

    # -- reading -----------------------------------------------------------------------

    def _describe_pages(self, **kwargs: Any) -> list[Instance]:
        paginator = self.client.get_paginator("describe_instances")
        found = self._paged_call("DescribeInstances", paginator, "Reservations[].Instances[]", **kwargs)
        return [jsonable(i) for i in found]

    def find_pod_instances(self, uid: str) -> list[Instance]:
        """The cluster's live instances tagged with this pod UID (normally zero or one)."""
        return self._describe_pages(
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.settings.cluster_name]},
                {"Name": f"tag:{TAG_POD_UID}", "Values": [uid]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )

    def pod_instance_history(self, uid: str) -> list[Instance]:
        """Every instance of the cluster tagged with this pod UID in any state, terminated ones too
        (EC2 lists those for about an hour), each with the ``ClientToken`` it was launched with."""
        return self._describe_pages(
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.settings.cluster_name]},
                {"Name": f"tag:{TAG_POD_UID}", "Values": [uid]},
            ]
        )

    def cluster_instances(self, states: Sequence[str] = LIVE_STATES) -> list[Instance]:
        """Every instance tagged for this cluster, in the given states, all pages read."""
        return self._describe_pages(
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.settings.cluster_name]},
                {"Name": "instance-state-name", "Values": list(states)},
            ],
            PaginationConfig={"PageSize": 1000},
        )

    def describe(self, instance_ids: Iterable[str]) -> dict[str, Instance]:
        """Full descriptions by ID, one call per 1,000 IDs; IDs EC2 no longer knows are absent."""
        ids = list(dict.fromkeys(instance_ids))
        found: dict[str, Instance] = {}
        for start in range(0, len(ids), DESCRIBE_BATCH):
            batch = ids[start : start + DESCRIBE_BATCH]
            try:
                instances = self._describe_pages(InstanceIds=batch)
            except Ec2Error as exc:
                if exc.code not in NOT_FOUND_CODES:
                    raise
                # One unknown ID fails the whole batch: fall back to a filter, which ignores them.
                instances = self._describe_pages(Filters=[{"Name": "instance-id", "Values": batch}])
            found.update((i["InstanceId"], i) for i in instances)
        return found

    def impaired(self) -> dict[str, str]:
        """Running instances whose EC2 status checks fail: ID -> which check ("instance", "system").

        Two filtered DescribeInstanceStatus listings (one per check, all pages) whatever the fleet
        size; the statuses are checked here too, so an endpoint that ignores the filter is harmless.
        """
        found: dict[str, str] = {}
        paginator = self.client.get_paginator("describe_instance_status")
        for check, key in (
            ("instance-status.status", "InstanceStatus"),
            ("system-status.status", "SystemStatus"),
        ):
            statuses = self._paged_call(
                "DescribeInstanceStatus",
                paginator,
                "InstanceStatuses[]",
                Filters=[{"Name": check, "Values": ["impaired"]}],
                PaginationConfig={"PageSize": 1000},
            )
            for status in statuses:
                if status.get(key, {}).get("Status") == "impaired":
                    found.setdefault(status["InstanceId"], key.removesuffix("Status").lower())
        return found

    def console_output(self, instance_id: str) -> str:
        """The console output (boto3 decodes its base64): the newest on Nitro, else EC2's last post."""
        try:
            answer = self._call(
                "GetConsoleOutput", self.client.get_console_output, InstanceId=instance_id, Latest=True
            )
        except Ec2Error as exc:
            if exc.retryable:
                raise
            # Latest is for Nitro instances only; others answer the buffer EC2 posted last.
            answer = self._call("GetConsoleOutput", self.client.get_console_output, InstanceId=instance_id)
        return str(answer.get("Output") or "")

    # -- mutating -----------------------------------------------------------------------

    def pod_tags(self, pod: Mapping[str, Any], node: str) -> dict[str, str]:
        """The tags an instance of ``pod`` on ``node`` is launched with (:mod:`vkec2.domain.instances`)."""
        return pod_tags(self.settings.cluster_name, pod, node)

    def run_instance(self, params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        """Launch one instance with ``params``, tagged at launch, idempotent by ``token``."""
        return self.run_instances(params, tags, token, 1)[0]

    def run_instances(
        self, params: LaunchParams, tags: Mapping[str, str], token: str, count: int
    ) -> list[Instance]:
        """Launch up to ``count`` instances with ``params`` in one call (EC2 may launch fewer, at
        least one), tagged at launch, idempotent by ``token``; in launch-index order. The request
        is :func:`~vkec2.domain.runinstances.run_instances_request`; the AMI's root device is read
        when the root volume needs it."""
        root = None
        if params.image_id and needs_root_device(params.launch, params.instance_type):
            root = self.root_device(params.image_id)
        kwargs = run_instances_request(params, tags, token, root, count)
        result = self._call("RunInstances", self.launch_client.run_instances, **kwargs)
        launched = [jsonable(i) for i in result["Instances"]]
        return sorted(launched, key=lambda i: int(i.get("AmiLaunchIndex", 0)))

    def root_device(self, image_id: str) -> RootDevice | None:
        """The AMI's root device name and snapshot size, asked once per process (an AMI never
        changes); None when DescribeImages does not know the image (RunInstances will say why)."""
        if image_id not in self._images:
            with self._images_lock:
                if image_id not in self._images:
                    try:
                        found = self._call(
                            "DescribeImages", self.client.describe_images, ImageIds=[image_id]
                        ).get("Images", [])
                    except Ec2Error as exc:
                        if not (exc.code or "").startswith("InvalidAMIID."):
                            raise
                        found = []
                    self._images[image_id] = root_device_of(found[0]) if found else None
        return self._images[image_id]

    def create_tags(self, instance_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        if not instance_ids:
            return
        self._call(
            "CreateTags",
            self.client.create_tags,
            Resources=list(instance_ids),
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        """Terminate instances; returns the IDs EC2 answered NotFound for.

        An unknown ID is either gone long ago or, for seconds after its launch, not visible yet:
        the caller, which knows when it launched the instance, decides which (the lifecycle
        retries a young one until its visibility window has passed).
        """
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return []
        try:
            self._call("TerminateInstances", self.client.terminate_instances, InstanceIds=ids)
        except Ec2Error as exc:
            if exc.code not in NOT_FOUND_CODES:
                raise
            if len(ids) == 1:
                return ids
            # One unknown ID fails the whole batch; EC2's message names them ("The instance IDs
            # 'i-1, i-2' do not exist"): send the rest again, or one by one if none is named.
            named = [i for i in ids if i in set(INSTANCE_ID_RE.findall(exc.message))]
            if not named:
                return [unknown for instance_id in ids for unknown in self.terminate([instance_id])]
            return [*named, *self.terminate([i for i in ids if i not in named])]
        return []

    def terminate_soon(self, instance_ids: Sequence[str]) -> list[str] | None:
        """Terminate instances now (the plain gateway shares calls with nobody); see the port."""
        return self.terminate(instance_ids)

    # -- fleet maintenance (added for the quota refresh) --------------------------------

    def describe_instance_types(self, instance_types: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Descriptions of instance types by name (``VCpuInfo``, ``MemoryInfo`` ...), all pages read."""
        wanted = sorted(set(instance_types))
        if not wanted:
            return {}
        paginator = self.client.get_paginator("describe_instance_types")
        types = self._paged_call("DescribeInstanceTypes", paginator, "InstanceTypes[]", InstanceTypes=wanted)
        return {str(item["InstanceType"]): dict(item) for item in types}

    def subnet_zones(self, subnet_ids: Sequence[str]) -> dict[str, str]:
        """Subnet ID -> its Availability Zone, asked once per process (a subnet never moves).

        A subnet EC2 does not know, or any subnet while DescribeSubnets fails, is left out (the
        caller keys by the subnet ID instead); only a failed call is asked again later.
        """
        if set(subnet_ids) <= set(self._zones):
            return {sid: self._zones[sid] for sid in subnet_ids if self._zones.get(sid)}
        with self._zones_lock:
            return self._look_up_zones(subnet_ids)

    def _look_up_zones(self, subnet_ids: Sequence[str]) -> dict[str, str]:
        wanted = sorted(set(subnet_ids) - set(self._zones))
        if wanted:
            try:
                paginator = self.client.get_paginator("describe_subnets")
                found = self._paged_call("DescribeSubnets", paginator, "Subnets[]", SubnetIds=wanted)
                zones = {str(s["SubnetId"]): str(s["AvailabilityZone"]) for s in found}
            except Ec2Error as exc:
                log.warning("DescribeSubnets %s failed (%s); keying capacity by subnet", wanted, exc.message)
                if exc.code != "InvalidSubnetID.NotFound":
                    return {sid: self._zones[sid] for sid in subnet_ids if self._zones.get(sid)}
                zones = {}
            self._zones.update({sid: zones.get(sid, "") for sid in wanted})
        return {sid: self._zones[sid] for sid in subnet_ids if self._zones.get(sid)}
