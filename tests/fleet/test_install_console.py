"""GetConsoleOutput through the gateway and the EC2 double: the installer's marker reaches the fleet."""

from __future__ import annotations

import time
import uuid

from tests.support.ec2proxy import Ec2Proxy
from tests.support.fleet import launch_params
from vkec2.config import Settings
from vkec2.contract import INSTALL_FAILED_MARKER
from vkec2.domain.instances import client_token
from vkec2.domain.models import PodRecord
from vkec2.ec2.gateway import Ec2Gateway
from vkec2.fleet.installcheck import InstallCheck


def test_the_install_marker_is_read_over_the_ec2_wire(ec2_proxy: Ec2Proxy) -> None:
    settings = Settings.model_validate(
        {
            "cluster_name": f"ic-{uuid.uuid4().hex[:8]}",
            "aws": {"endpoint_url": ec2_proxy.url, "max_attempts": 1},
        }
    )
    gateway = Ec2Gateway(settings)
    uid = str(uuid.uuid4())
    pod = {"metadata": {"uid": uid, "name": "web", "namespace": "ci"}}
    iid = gateway.run_instance(
        launch_params("m5.large", {}), gateway.pod_tags(pod, "n1"), client_token(uid, 0)
    )["InstanceId"]
    assert INSTALL_FAILED_MARKER not in gateway.console_output(iid)  # moto's own fixed text
    ec2_proxy.console[iid] = (
        f"boot\n{INSTALL_FAILED_MARKER}: agent artifact s3://b/k has sha256 00, expected 11\n"
    )
    rec = PodRecord(uid=uid, namespace="ci", name="web", node="n1", spec=pod)
    rec.instance_id, rec.launched_at = iid, time.time() - 60
    check = InstallCheck(gateway)
    assert check.failure(rec) == "agent artifact s3://b/k has sha256 00, expected 11"
    assert check.failure(rec) is None  # not read again within the interval
    assert ec2_proxy.calls["GetConsoleOutput"] == 2
