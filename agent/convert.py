"""Runtime snapshots as protobuf: :class:`agent.model.PodSnapshot` to ``vkec2.agent.v1.PodStatus``.

The runtimes report the agent's own, runtime-neutral picture of a pod (:mod:`agent.model`); the
servicers send it in the Kubernetes-shaped messages of ``proto/agent/v1/agent.proto``. Times are
seconds since the epoch inside the agent and protobuf Timestamps on the wire; an absent time stays
absent.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from agent.events import AgentEvent
from agent.model import ContainerSnapshot, PodSnapshot, Running, SpotNotice, State, Waiting
from agent.v1 import agent_pb2


def _ts(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1_000_000_000))
    return ts


def state_pb(st: State | None) -> agent_pb2.ContainerState | None:
    if st is None:
        return None
    if isinstance(st, Waiting):
        return agent_pb2.ContainerState(
            waiting=agent_pb2.ContainerStateWaiting(reason=st.reason, message=st.message)
        )
    if isinstance(st, Running):
        return agent_pb2.ContainerState(
            running=agent_pb2.ContainerStateRunning(started_at=_ts(st.started_at))
        )
    return agent_pb2.ContainerState(
        terminated=agent_pb2.ContainerStateTerminated(
            exit_code=st.exit_code,
            signal=st.signal,
            reason=st.reason,
            message=st.message,
            started_at=_ts(st.started_at),
            finished_at=_ts(st.finished_at),
        )
    )


def container_pb(c: ContainerSnapshot) -> agent_pb2.ContainerStatus:
    return agent_pb2.ContainerStatus(
        name=c.name,
        ready=c.ready,
        restart_count=c.restart_count,
        state=state_pb(c.state),
        last_state=state_pb(c.last_state),
        image=c.image,
        started=c.started,
        container_id=c.container_id,
    )


def status_pb(s: PodSnapshot) -> agent_pb2.PodStatus:
    return agent_pb2.PodStatus(
        phase=s.phase,
        conditions=[
            agent_pb2.PodCondition(
                type=c.type,
                status=c.status,
                reason=c.reason,
                message=c.message,
                last_transition_time=_ts(c.last_transition or None),
            )
            for c in s.conditions
        ],
        init_container_statuses=[container_pb(c) for c in s.init_statuses],
        container_statuses=[container_pb(c) for c in s.statuses],
        reason=s.reason,
        message=s.message,
        pod_ip=s.pod_ip,
        start_time=_ts(s.start_time),
        pod_uid=s.pod_uid,
        version=s.version,
        spot_notice=spot_notice_pb(s.spot_notice),
        events=[event_pb(e) for e in s.events],
    )


def spot_notice_pb(notice: SpotNotice | None) -> agent_pb2.SpotNotice | None:
    if notice is None:
        return None
    return agent_pb2.SpotNotice(kind=notice.kind, action=notice.action, time=notice.time)


def event_pb(e: AgentEvent) -> agent_pb2.PodEvent:
    return agent_pb2.PodEvent(
        seq=e.seq,
        type=e.type,
        reason=e.reason,
        message=e.message,
        container=e.container,
        count=e.count,
        first_timestamp=_ts(e.first),
        last_timestamp=_ts(e.last),
    )
