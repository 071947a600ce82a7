"""The fleet's wire names: everything two processes (or a process and AWS or Kubernetes) must spell alike.

The producer, the CLI and the workers never import each other's code, so the names they exchange
live here, once: the Celery task names and the queues they are routed to (a task ``vkec2.<queue>.<verb>``
goes to queue ``<queue>``), the keyword arguments of the pod tasks, the EC2 tag keys that make an
instance's tags the durable record of its pod (and the warm-pool states written into one of them),
the pod annotations and labels the fleet reads or writes, the pod condition types it owns, and the
EC2 error codes it classifies as "no capacity now" (:data:`CAPACITY_ERROR_CODES`).
Renaming anything here is a breaking change for a running fleet (queued messages, tagged
instances, pods in the API server); the module imports nothing and sits at the bottom layer.
"""

from __future__ import annotations

from typing import Final

# -- Celery: queues and task names -------------------------------------------------------------

#: The prefix of every task name; ``vkec2.<queue>.<verb>`` is routed to ``<queue>``.
TASK_NAMESPACE: Final = "vkec2"

PODS_QUEUE: Final = "pods"
HEALTH_QUEUE: Final = "health"
MAINTENANCE_QUEUE: Final = "maintenance"
#: Every queue of the fleet, in the order a worker consuming all of them lists them.
QUEUES: Final = (PODS_QUEUE, HEALTH_QUEUE, MAINTENANCE_QUEUE)

POD_CREATE: Final = "vkec2.pods.create"
POD_UPDATE: Final = "vkec2.pods.update"
POD_DELETE: Final = "vkec2.pods.delete"
#: The pod lifecycle tasks (each takes :func:`pod_task_kwargs`); any may be replayed by hand.
POD_TASKS: Final = (POD_CREATE, POD_UPDATE, POD_DELETE)

HEALTH_SWEEP: Final = "vkec2.health.sweep"
WARM_POOLS: Final = "vkec2.maintenance.warm_pools"
QUOTAS: Final = "vkec2.maintenance.quotas"
STATUS_LOG: Final = "vkec2.maintenance.status_log"
ORPHAN_GC: Final = "vkec2.maintenance.gc"
RESUME: Final = "vkec2.maintenance.resume"
HOSTS: Final = "vkec2.maintenance.hosts"
POD_TAGS: Final = "vkec2.maintenance.pod_tags"
#: The periodic tasks beat sends (no arguments).
PERIODIC_TASKS: Final = (HEALTH_SWEEP, WARM_POOLS, QUOTAS, STATUS_LOG, ORPHAN_GC, RESUME, HOSTS, POD_TAGS)

#: The message header that carries a task's publish time (seconds since the epoch); the workers
#: read it for the queue wait, the resume task for the age of the oldest queued message.
SENT_AT_HEADER: Final = "vkec2_sent_at"
#: The message header that counts how often a pod step was retried after an error (a busy lock's
#: retries are not counted): Celery's own ``retries`` counts both.
STEP_RETRIES_HEADER: Final = "vkec2_step_retries"


def queue_pattern(queue: str) -> str:
    """The glob of the task names routed to ``queue`` (``vkec2.pods.*`` for ``pods``)."""
    return f"{TASK_NAMESPACE}.{queue}.*"


def pod_task_kwargs(uid: str, generation: int | None = None) -> dict[str, str | int]:
    """The keyword arguments of a pod task: the pod UID, and the generation it was sent for if known."""
    if generation is None:
        return {"uid": uid}
    return {"uid": uid, "generation": generation}


# -- EC2 tags ----------------------------------------------------------------------------------

#: The prefix of every tag the fleet owns; users may not set tags under it.
TAG_PREFIX: Final = "vkec2.io/"
TAG_CLUSTER: Final = "vkec2.io/cluster"
TAG_NODE: Final = "vkec2.io/node"
TAG_POD_UID: Final = "vkec2.io/pod-uid"
TAG_POD_NAMESPACE: Final = "vkec2.io/pod-namespace"
TAG_POD_NAME: Final = "vkec2.io/pod-name"
TAG_POOL: Final = "vkec2.io/pool"
#: On every instance of a batched launch (one RunInstances for several pods): the batch's ID, until
#: its pod tags are written right after (vkec2.fleet.batchlaunch).
TAG_LAUNCH_BATCH: Final = "vkec2.io/launch-batch"
TAG_POOL_STATE: Final = "vkec2.io/pool-state"
#: The capacity type an instance was launched with (``spot`` or ``on-demand``, :data:`CAPACITY_TYPES`).
TAG_CAPACITY_TYPE: Final = "vkec2.io/capacity-type"

#: Values of :data:`TAG_POOL_STATE`: a warm-pool member's state (Claimed once a pod took it).
POOL_PROVISIONING: Final = "Provisioning"
POOL_READY: Final = "Ready"
POOL_CLAIMED: Final = "Claimed"
POOL_UNHEALTHY: Final = "Unhealthy"
POOL_STATES: Final = (POOL_PROVISIONING, POOL_READY, POOL_CLAIMED, POOL_UNHEALTHY)
#: A Dedicated Host's host pool (on the host, from AllocateHosts, and on the instances placed on it).
TAG_HOST_POOL: Final = "vkec2.io/host-pool"
#: A Dedicated Host's allocation sequence number in its pool (its ClientToken's; never reused).
TAG_HOST_SLOT: Final = "vkec2.io/host-slot"
#: The Dedicated Host an instance was placed on.
TAG_HOST_ID: Final = "vkec2.io/host-id"
#: On every AWS resource ``vkec2 infra apply`` made (with :data:`TAG_CLUSTER`): what destroy removes.
TAG_MANAGED_BY: Final = "vkec2.io/managed-by"
#: The value of :data:`TAG_MANAGED_BY` for ``vkec2 infra``'s resources.
MANAGED_BY_INFRA: Final = "infra"

# -- pod metadata ------------------------------------------------------------------------------

#: The prefix of the pod annotations that set launch parameters (the original provider's).
ANNOTATION_PREFIX: Final = "compute.amazonaws.com/"
#: The annotation the producer writes on a pod: the ID of the instance that runs it.
INSTANCE_ID_ANNOTATION: Final = "compute.amazonaws.com/instance-id"
#: The annotation a pod asks for extra EBS volumes with (a JSON list, :mod:`vkec2.domain.launchopts`).
VOLUMES_ANNOTATION: Final = "compute.amazonaws.com/volumes"
#: The annotation standalone mode writes on a pod: the manifest file it came from.
MANIFEST_ANNOTATION: Final = "vkec2.io/manifest"
#: The annotation that chooses a pod's capacity type (one of :data:`CAPACITY_TYPES`).
CAPACITY_TYPE_ANNOTATION: Final = "compute.amazonaws.com/capacity-type"
#: The label of a virtual node naming its cluster.
CLUSTER_LABEL: Final = "vkec2.io/cluster"
#: The annotations the producer writes on a pod: the instance type and the Availability Zone of the
#: instance that runs it (what EC2 says it launched, not what the pod asked for).
INSTANCE_TYPE_ANNOTATION: Final = "vkec2.io/instance-type"
ZONE_ANNOTATION: Final = "vkec2.io/zone"
#: The labels the virtual node carries (producer/node.py): a pod's nodeSelector or node affinity on
#: them chose the node, not the instance, so the instance choice leaves them to the scheduler.
NODE_LABEL_KEYS: Final = frozenset(
    {
        "type",
        "kubernetes.io/role",
        "kubernetes.io/os",
        "kubernetes.io/hostname",
        "node.kubernetes.io/exclude-from-external-load-balancers",
        CLUSTER_LABEL,
    }
)

# -- well-known node labels the instance choice honours (vkec2/domain/placement.py) ---------------

LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
LABEL_INSTANCE_TYPE_BETA: Final = "beta.kubernetes.io/instance-type"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"
LABEL_ZONE_BETA: Final = "failure-domain.beta.kubernetes.io/zone"
LABEL_INSTANCE_FAMILY: Final = "karpenter.k8s.aws/instance-family"
LABEL_INSTANCE_CATEGORY: Final = "karpenter.k8s.aws/instance-category"
LABEL_INSTANCE_GENERATION: Final = "karpenter.k8s.aws/instance-generation"
LABEL_ARCH: Final = "kubernetes.io/arch"
#: Parsed and handed on as a hint (``on-demand``, ``spot``); the launch does not act on it here.
LABEL_CAPACITY_TYPE: Final = "karpenter.sh/capacity-type"

# -- reasons of a pod the instance choice cannot place (Failed, nothing launched) ---------------

#: The nodeSelector or required node affinity is malformed (operator, values, Gt/Lt not an integer).
INVALID_NODE_AFFINITY: Final = "InvalidNodeAffinity"
#: A container's cpu or memory request (or limit) is not a Kubernetes quantity.
INVALID_RESOURCE_REQUEST: Final = "InvalidResourceRequest"
#: No allowed instance type satisfies the pod's selector on the instance keys.
NO_MATCHING_INSTANCE_TYPE: Final = "NoMatchingInstanceType"
#: No configured subnet is in a zone the pod's selector allows.
NO_MATCHING_ZONE: Final = "NoMatchingZone"
#: The pod's cpu/memory requests exceed every allowed instance type.
NO_INSTANCE_TYPE_FITS: Final = "NoInstanceTypeFits"

#: Pod reasons of Dedicated-Host placement (vkec2.fleet.hosts, vkec2.domain.podspec).
REASON_WAITING_FOR_HOST: Final = "WaitingForHost"
REASON_HOST_POOL_REQUIRED: Final = "HostPoolRequired"
REASON_UNKNOWN_HOST_POOL: Final = "UnknownHostPool"
REASON_HOST_POOL_CANNOT_FIT: Final = "HostPoolCannotFit"

# -- pod conditions the fleet owns (pods may list them as readiness gates) -----------------------

INSTANCE_READY: Final = "vkec2.io/InstanceReady"
AGENT_CONNECTED: Final = "vkec2.io/AgentConnected"
HEALTHY: Final = "vkec2.io/Healthy"
FLAPPING: Final = "vkec2.io/Flapping"
#: True while EC2 refuses the pod's launches for a quota (``VcpuLimitExceeded``, ``InstanceLimitExceeded``).
QUOTA_EXCEEDED: Final = "vkec2.io/QuotaExceeded"
#: True once the pod's Spot instance got an interruption notice or a rebalance recommendation.
SPOT_INTERRUPTION_NOTICE: Final = "vkec2.io/SpotInterruptionNotice"
#: Node condition: True while the health sweep's circuit breaker holds back agent-caused replacements.
REMEDIATION_PAUSED: Final = "vkec2.io/RemediationPaused"
#: Node condition: True while the fleet has had no active Celery beat for too long (Ready unaffected).
BEAT_MISSING: Final = "vkec2.io/BeatMissing"

# -- EC2 error codes the fleet treats alike ----------------------------------------------------

#: RunInstances errors that say "no capacity for this launch now" (not "this launch is wrong"): the
#: pod waits, moving on to its next subnet and instance type (:mod:`vkec2.fleet.capacity`).
#: ``Unsupported`` is what RunInstances answers for a type not offered in the subnet's zone.
CAPACITY_ERROR_CODES: Final = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientCapacity",
        "InsufficientCapacityOnHost",
        "Unsupported",
        "VcpuLimitExceeded",
        "InstanceLimitExceeded",
        # Spot only: on a Spot launch every code here marks the Spot offering, never on-demand's.
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "UnfulfillableCapacity",
    }
)
#: The capacity errors that are account quotas for the whole region, not one zone's capacity.
QUOTA_ERROR_CODES: Final = frozenset({"VcpuLimitExceeded", "InstanceLimitExceeded"})
#: The pseudo-zone of a "no capacity" mark that holds in the whole region (a quota, not a zone).
REGION_WIDE: Final = "*"

# -- Spot --------------------------------------------------------------------------------------

#: Capacity types (``capacity_type`` in ``ec2`` and warm pools, the capacity-type annotation):
#: on-demand only, Spot only, or Spot first with on-demand as the fallback.
ON_DEMAND: Final = "on-demand"
SPOT: Final = "spot"
SPOT_OR_ON_DEMAND: Final = "spot-or-on-demand"
CAPACITY_TYPES: Final = (ON_DEMAND, SPOT, SPOT_OR_ON_DEMAND)
#: The pod reason of a pod whose Spot instance EC2 interrupted (Failed, or Pending while replaced).
SPOT_INTERRUPTED: Final = "SpotInterrupted"
#: The reason of the event and condition of an interruption notice (two-minute warning).
SPOT_NOTICE_REASON: Final = "SpotInterruptionNotice"
#: The reason of the event and condition of a rebalance recommendation.
SPOT_REBALANCE_REASON: Final = "SpotRebalanceRecommendation"
#: The reason of the notice condition turned False once the pod left the noticed instance.
SPOT_NOTICE_CLEARED_REASON: Final = "InstanceReplaced"
#: AllocateHosts errors that say "no host now" (a zone without host capacity, the host quota): the
#: fleet tries the pool's next zone, or the pod waits for a host (:mod:`vkec2.fleet.hosts`).
HOST_ALLOCATION_ERROR_CODES: Final = frozenset({"InsufficientHostCapacity", "HostLimitExceeded"})

# -- node citizenship: DaemonSet pods, NotReady eviction, images -> AMIs --------------------------

#: The annotation naming a pod's AMI; it overrides the image table (``kubernetes.images``) and is
#: held to the AMI allowlist (``allowlists.*.images``) like every launch annotation.
IMAGE_ID_ANNOTATION: Final = "compute.amazonaws.com/image-id"
#: The reason of a DaemonSet pod the node refuses (``kubernetes.daemonset_pods: refuse``): Failed.
DAEMONSET_POD_REFUSED: Final = "DaemonSetPodRefused"
#: The reason of a pod whose container image the image table does not map (event and condition).
UNMAPPED_IMAGE: Final = "UnmappedImage"
#: Pod condition: False when a container image has no AMI in the image table (the default AMI runs).
IMAGE_MAPPED: Final = "vkec2.io/ImageMapped"
#: The taints Kubernetes' node lifecycle controller puts on a NotReady / unreachable node.
TAINT_NOT_READY: Final = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE: Final = "node.kubernetes.io/unreachable"
#: The Warning event reason of a pod that NotReady will evict after a finite tolerationSeconds.
EVICTED_IF_NOT_READY: Final = "EvictedIfNodeNotReady"
#: Node annotation: the labels and taints vkec2 set on the node (JSON), so adopting it again
#: replaces or removes exactly those and keeps every other controller's.
NODE_MANAGED_ANNOTATION: Final = "vkec2.io/managed-labels-taints"

# -- probes ------------------------------------------------------------------------------------

#: The agent's pod conditions the health sweep copies into a Running pod's record when they change.
#: The pod condition a readiness probe drives (Kubernetes' own type).
POD_READY: Final = "Ready"
AGENT_POD_CONDITIONS: Final = ("PodScheduled", "Initialized", "ContainersReady", POD_READY)
#: The ``event_type`` of a status outbox entry that updates ``pods/status`` without recording an Event
#: (a readiness change the kubelet would not announce).
STATUS_ONLY_EVENT: Final = "StatusOnly"
#: At most this many new agent events (probe Unhealthy, Killing) are forwarded per pod per sweep.
MAX_FORWARDED_AGENT_EVENTS: Final = 10

# -- ConfigMaps, Secrets and volumes -------------------------------------------------------------

#: The top-level key of a stored desired spec that carries the producer's resolved ConfigMap,
#: Secret, downward API and token content, sealed (``{"sealed": <Fernet token>, "digest": <hmac>}``).
RESOLVED_FIELD: Final = "vkec2Resolved"
#: Pod reason and event reason of a pod whose referenced ConfigMap/Secret/key is missing (the
#: kubelet's own reason); the pod stays Pending and is resolved again.
CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
#: Pod reason and event reason of a pod with a volume type vkec2 cannot provide (hostPath, PVC, ...).
UNSUPPORTED_VOLUME: Final = "UnsupportedVolume"
#: Volume types the producer resolves and the agent materialises.
SUPPORTED_VOLUME_TYPES: Final = ("configMap", "secret", "downwardAPI", "projected", "emptyDir")

# --- agent artifact ---
#: The line the agent's user data prints on the instance console when the install fails
#: (agent/userdata; the fleet reads it with GetConsoleOutput, vkec2.fleet.installcheck).
INSTALL_FAILED_MARKER: Final = "VKEC2-AGENT-INSTALL-FAILED"
#: Pod reason of a pod whose instance could not install its agent (the marker's reason is the message).
AGENT_INSTALL_FAILED: Final = "AgentInstallFailed"
