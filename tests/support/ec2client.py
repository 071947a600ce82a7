"""boto3 EC2 clients for tests that talk to the EC2 double or moto over the real wire.

A single attempt (no retries) so a test sees each request's own answer, a throttle or an eventual-
consistency miss included; :func:`client_error` unpacks the ``ClientError`` a call raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_boto3_ec2 import EC2Client


def single_attempt_client(url: str) -> EC2Client:
    """An EC2 client for ``url`` (us-west-2) that never retries."""
    config = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client("ec2", endpoint_url=url, region_name="us-west-2", config=config)


def client_error(call: Callable[[], object]) -> tuple[str, int, str]:
    """(code, HTTP status, message) of the ClientError ``call`` raises (fails the test if none)."""
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )
