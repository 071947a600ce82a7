"""The EC2 gateway: every EC2 call the fleet makes goes through here, on full Instance descriptions.

Instances are tagged at launch (``TagSpecifications``) with cluster, virtual node, pod UID and pod
namespace/name, so the tags are the durable record of which pod an instance belongs to: before
launching, the gateway looks the pod's instance up by tag and adopts it. ``RunInstances`` carries a
``ClientToken`` derived from the pod UID and attempt, so a retried call returns the same instance
instead of a second one. ``TerminateInstances`` treats "not found" as done. The boto3 client is
created lazily once per process (after a fork, a new one), with adaptive retries, connect/read
timeouts and the endpoint URL from config; every call is counted in Redis by action.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions

from vkec2.config import Settings
from vkec2.contract import TAG_CLUSTER, TAG_NODE, TAG_POD_NAME, TAG_POD_NAMESPACE, TAG_POD_UID
from vkec2.domain.podspec import LaunchParams
from vkec2.errors import Ec2Error
from vkec2.observability import metrics

if TYPE_CHECKING:
    from types_boto3_ec2 import EC2Client

    from vkec2.store.redis_store import Store

Instance = dict[str, Any]


LIVE_STATES = ("pending", "running", "stopping", "stopped")
DESCRIBE_BATCH = 1000
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})


def client_token(uid: str, attempt: int) -> str:
    """The idempotency token of one launch attempt of a pod: at most 64 ASCII characters."""
    token = f"vkec2-{uid}-{attempt}"
    if len(token) > 64:
        token = "vkec2-" + hashlib.sha256(token.encode()).hexdigest()[:58]
    return token


def tag_map(instance: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


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


class Ec2Gateway:
    """EC2 operations of one cluster, with call accounting and an optional fleet-wide rate limiter."""

    def __init__(
        self, settings: Settings, store: Store | None = None, limiter: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.limiter = limiter
        self._client: EC2Client | None = None
        self._pid = 0
        self._mutex = threading.Lock()

    @property
    def client(self) -> EC2Client:
        if self._client is None or self._pid != os.getpid():
            with self._mutex:
                if self._client is None or self._pid != os.getpid():
                    aws = self.settings.aws
                    config = botocore.config.Config(
                        region_name=self.settings.region,
                        connect_timeout=aws.connect_timeout_seconds,
                        read_timeout=aws.read_timeout_seconds,
                        retries={"mode": "adaptive", "max_attempts": aws.max_attempts},
                        max_pool_connections=32,
                    )
                    self._client = boto3.session.Session().client(
                        "ec2", endpoint_url=aws.endpoint_url, config=config
                    )
                    self._pid = os.getpid()
        return self._client

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        if self.limiter is not None:
            self.limiter(action)
        started = time.monotonic()
        try:
            result = fn(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            throttled = code in THROTTLE_CODES
            metrics.ec2_call(
                action, ok=False, throttled=throttled, seconds=time.monotonic() - started, kwargs=kwargs
            )
            if self.store is not None:
                self.store.count_ec2_call(action, throttled=throttled)
            raise Ec2Error(
                f"{action}: {code}: {exc.response.get('Error', {}).get('Message', '')}",
                code=code,
                retryable=throttled,
                reason="EC2Throttled" if throttled else None,
            ) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            metrics.ec2_call(
                action, ok=False, throttled=False, seconds=time.monotonic() - started, kwargs=kwargs
            )
            if self.store is not None:
                self.store.count_ec2_call(action)
            raise Ec2Error(f"{action}: {exc}", retryable=True, reason="EC2Unreachable") from exc
        metrics.ec2_call(action, ok=True, throttled=False, seconds=time.monotonic() - started, kwargs=kwargs)
        if self.store is not None:
            self.store.count_ec2_call(action)
        return result

    # -- reading -----------------------------------------------------------------------

    def _describe_pages(self, **kwargs: Any) -> list[Instance]:
        out: list[Instance] = []
        token: str | None = None
        while True:
            args = dict(kwargs)
            if token:
                args["NextToken"] = token
            page = self._call("DescribeInstances", self.client.describe_instances, **args)
            for reservation in page.get("Reservations", []):
                out.extend(jsonable(i) for i in reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return out

    def find_pod_instances(self, uid: str) -> list[Instance]:
        """The cluster's live instances tagged with this pod UID (normally zero or one)."""
        return self._describe_pages(
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.settings.cluster_name]},
                {"Name": f"tag:{TAG_POD_UID}", "Values": [uid]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )

    def cluster_instances(self, states: Sequence[str] = LIVE_STATES) -> list[Instance]:
        """Every instance tagged for this cluster, in the given states, all pages read."""
        return self._describe_pages(
            Filters=[
                {"Name": f"tag:{TAG_CLUSTER}", "Values": [self.settings.cluster_name]},
                {"Name": "instance-state-name", "Values": list(states)},
            ],
            MaxResults=1000,
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
        for check, key in (
            ("instance-status.status", "InstanceStatus"),
            ("system-status.status", "SystemStatus"),
        ):
            token: str | None = None
            while True:
                args: dict[str, Any] = {
                    "Filters": [{"Name": check, "Values": ["impaired"]}],
                    "MaxResults": 1000,
                }
                if token:
                    args["NextToken"] = token
                page = self._call("DescribeInstanceStatus", self.client.describe_instance_status, **args)
                for status in page.get("InstanceStatuses", []):
                    if status.get(key, {}).get("Status") == "impaired":
                        found.setdefault(status["InstanceId"], key.removesuffix("Status").lower())
                token = page.get("NextToken")
                if not token:
                    break
        return found

    # -- mutating -----------------------------------------------------------------------

    def pod_tags(self, pod: Mapping[str, Any], node: str) -> dict[str, str]:
        meta = pod.get("metadata", {})
        return {
            TAG_CLUSTER: self.settings.cluster_name,
            TAG_NODE: node,
            TAG_POD_UID: str(meta.get("uid", "")),
            TAG_POD_NAMESPACE: str(meta.get("namespace", "default")),
            TAG_POD_NAME: str(meta.get("name", "")),
            "Name": f"{meta.get('namespace', 'default')}/{meta.get('name', '')}",
        }

    def run_instance(self, params: LaunchParams, tags: Mapping[str, str], token: str) -> Instance:
        """Launch one instance with ``params``, tagged at launch, idempotent by ``token``."""
        all_tags = {**dict(params.tags), **tags}
        kwargs: dict[str, Any] = {
            "ImageId": params.image_id,
            "InstanceType": params.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": token,
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in sorted(all_tags.items())],
                }
            ],
        }
        if params.subnet_id:
            kwargs["SubnetId"] = params.subnet_id
        if params.security_groups:
            kwargs["SecurityGroupIds"] = list(params.security_groups)
        if params.instance_profile:
            key = "Arn" if params.instance_profile.startswith("arn:") else "Name"
            kwargs["IamInstanceProfile"] = {key: params.instance_profile}
        if params.key_pair:
            kwargs["KeyName"] = params.key_pair
        if params.user_data:
            kwargs["UserData"] = params.user_data
        result = self._call("RunInstances", self.client.run_instances, **kwargs)
        return jsonable(result["Instances"][0])

    def create_tags(self, instance_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        if not instance_ids:
            return
        self._call(
            "CreateTags",
            self.client.create_tags,
            Resources=list(instance_ids),
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate instances; an instance EC2 no longer knows counts as terminated."""
        ids = list(dict.fromkeys(instance_ids))
        if not ids:
            return
        try:
            self._call("TerminateInstances", self.client.terminate_instances, InstanceIds=ids)
        except Ec2Error as exc:
            if exc.code not in NOT_FOUND_CODES:
                raise
            if len(ids) > 1:  # one unknown ID fails the batch: terminate the rest one by one
                for instance_id in ids:
                    self.terminate([instance_id])

    # -- fleet maintenance (added for the quota refresh) --------------------------------

    def describe_instance_types(self, instance_types: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Descriptions of instance types by name (``VCpuInfo``, ``MemoryInfo`` ...), all pages read."""
        wanted = sorted(set(instance_types))
        found: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while wanted:
            args: dict[str, Any] = {"InstanceTypes": wanted}
            if token:
                args["NextToken"] = token
            page = self._call("DescribeInstanceTypes", self.client.describe_instance_types, **args)
            for item in page.get("InstanceTypes", []):
                found[str(item["InstanceType"])] = dict(item)
            token = page.get("NextToken")
            if not token:
                break
        return found
