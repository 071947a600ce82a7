"""The shapes configuration values must have: EC2 identifiers, tags, URLs and agent endpoints.

These rules are shared by the settings sections (:mod:`vkec2.config.model`,
:mod:`vkec2.config.operations`) and by :mod:`vkec2.domain.podspec`, which checks a pod's
``compute.amazonaws.com/*`` annotations with the same patterns as the file. The ``check_*``
functions are pydantic field validators: they return the value or raise :class:`ValueError` with
a message that ends up, prefixed by the key path and its source, in
:class:`~vkec2.config.errors.InvalidConfig`. :class:`Section` is the base of every section model.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from vkec2.contract import TAG_PREFIX

IMAGE_ID_RE = re.compile(r"ami-[0-9a-z]{1,32}")
SUBNET_ID_RE = re.compile(r"subnet-[0-9a-z]{1,32}")
SECURITY_GROUP_ID_RE = re.compile(r"sg-[0-9a-z]{1,32}")
#: family[generation][attributes][-size].size, e.g. m5.large, mac2.metal, u-6tb1.metal, c7gn.16xlarge
INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]{0,30}\.[a-z0-9]{1,30}")
_PROFILE_NAME_RE = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_PROFILE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:instance-profile/[\w+=,.@/-]{1,512}", re.ASCII)
_KEY_PAIR_RE = re.compile(r"[\x20-\x7e]{1,255}")
DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*")
QUANTITY_RE = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
QUOTA_CODE_RE = re.compile(r"L-[0-9A-F]{8}")
INSTANCE_FAMILY_RE = re.compile(r"[a-z][a-z0-9-]*")

#: EC2 allows 50 tags per resource; vkec2 adds its own (cluster, node, pod UID, namespace, name).
MAX_USER_TAGS = 40
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
#: Tag key prefixes a user may not set: AWS's own and the ones vkec2 writes.
RESERVED_TAG_PREFIXES = ("aws:", TAG_PREFIX)


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def is_instance_profile(value: str) -> bool:
    """True for an instance profile name or ARN."""
    return bool(_PROFILE_NAME_RE.fullmatch(value) or _PROFILE_ARN_RE.fullmatch(value))


def is_key_pair(value: str) -> bool:
    """True for an EC2 key pair name (1-255 printable ASCII characters)."""
    return bool(_KEY_PAIR_RE.fullmatch(value)) and value.strip() == value


def tag_problem(key: str, value: str) -> str | None:
    """What is wrong with a user tag, or None when EC2 and vkec2 both accept it."""
    if not key:
        return "empty tag key"
    if len(key) > MAX_TAG_KEY:
        return f"tag key {key[:40]!r}... longer than {MAX_TAG_KEY} characters"
    if len(value) > MAX_TAG_VALUE:
        return f"value of tag {key!r} longer than {MAX_TAG_VALUE} characters"
    for prefix in RESERVED_TAG_PREFIXES:
        if key.lower().startswith(prefix):
            return f"tag key {key!r} uses the reserved prefix {prefix!r}"
    return None


def tags_problem(tags: Mapping[str, str]) -> str | None:
    """What is wrong with a set of user tags, or None."""
    if len(tags) > MAX_USER_TAGS:
        return f"{len(tags)} tags; at most {MAX_USER_TAGS} user tags are allowed"
    for key, value in tags.items():
        problem = tag_problem(key, value)
        if problem:
            return problem
    return None


def check_subnets(values: list[str]) -> list[str]:
    """Subnet IDs (``ec2``, warm pools, host pools)."""
    return check_ids(values, SUBNET_ID_RE, "subnet ID like subnet-0123abcd")


def check_pool_name(value: str, what: str = "pool") -> str:
    """A pool's name (warm pool, host pool) is a DNS label: it goes into tags, keys and metrics."""
    if not DNS_LABEL_RE.fullmatch(value):
        raise ValueError(
            f"{what} name {value!r} is not a DNS label (lowercase letters, digits and '-', "
            "at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def check_image(value: str | None) -> str | None:
    """An AMI ID, or None."""
    if value is not None and not IMAGE_ID_RE.fullmatch(value):
        raise ValueError(f"not an AMI ID like ami-0123456789abcdef0: {value!r}")
    return value


def check_instance_type(value: str) -> str:
    """An EC2 instance type."""
    if not INSTANCE_TYPE_RE.fullmatch(value):
        raise ValueError(f"not an EC2 instance type like m5.large or mac2.metal: {value!r}")
    return value


def check_ids(values: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    """Distinct IDs, each matching ``pattern`` (``what`` names one in the message)."""
    for value in values:
        if not pattern.fullmatch(value):
            raise ValueError(f"not a {what}: {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"duplicate {what}s")
    return values


def check_profile(value: str | None) -> str | None:
    """An instance profile name or ARN, or None."""
    if value is not None and not is_instance_profile(value):
        raise ValueError("not an instance profile name or ARN")
    return value


def check_http_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or None."""
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
    return value


def check_key_pair(value: str | None) -> str | None:
    """An EC2 key pair name, or None."""
    if value is not None and not is_key_pair(value):
        raise ValueError("not a key pair name (1-255 printable ASCII characters)")
    return value


def check_quota_code(code: str) -> str:
    """A Service Quotas code like L-1216C47A."""
    if not QUOTA_CODE_RE.fullmatch(code):
        raise ValueError(f"not a quota code like L-1216C47A: {code!r}")
    return code


def parse_static(value: str) -> tuple[str, int]:
    """``(host, port)`` of an agent endpoint ``static:HOST:PORT``; raises ValueError if malformed."""
    host, sep, port_text = value[len("static:") :].rpartition(":")
    if not sep or not host:
        raise ValueError(f"static endpoint must be static:HOST:PORT, not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(host) or len(host) > 253:
            raise ValueError(f"static endpoint host {host!r} is not an IP address or host name") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"static endpoint port {port_text!r} is not an integer between 1 and 65535")
    return host, int(port_text)
