import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LaunchApplicationRequest(_message.Message):
    __slots__ = ("pod_json", "resolved_json")
    POD_JSON_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_JSON_FIELD_NUMBER: _ClassVar[int]
    pod_json: str
    resolved_json: str
    def __init__(self, pod_json: _Optional[str] = ..., resolved_json: _Optional[str] = ...) -> None: ...

class LaunchApplicationResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: PodStatus
    def __init__(self, status: _Optional[_Union[PodStatus, _Mapping]] = ...) -> None: ...

class TerminateApplicationRequest(_message.Message):
    __slots__ = ("grace_seconds", "background")
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    grace_seconds: int
    background: bool
    def __init__(self, grace_seconds: _Optional[int] = ..., background: _Optional[bool] = ...) -> None: ...

class TerminateApplicationResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: PodStatus
    def __init__(self, status: _Optional[_Union[PodStatus, _Mapping]] = ...) -> None: ...

class CheckApplicationHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchApplicationHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckApplicationHealthResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: PodStatus
    def __init__(self, status: _Optional[_Union[PodStatus, _Mapping]] = ...) -> None: ...

class PodStatus(_message.Message):
    __slots__ = ("phase", "conditions", "init_container_statuses", "container_statuses", "reason", "message", "pod_ip", "start_time", "pod_uid", "version", "spot_notice", "events")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    INIT_CONTAINER_STATUSES_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_STATUSES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POD_IP_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPOT_NOTICE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    phase: str
    conditions: _containers.RepeatedCompositeFieldContainer[PodCondition]
    init_container_statuses: _containers.RepeatedCompositeFieldContainer[ContainerStatus]
    container_statuses: _containers.RepeatedCompositeFieldContainer[ContainerStatus]
    reason: str
    message: str
    pod_ip: str
    start_time: _timestamp_pb2.Timestamp
    pod_uid: str
    version: int
    spot_notice: SpotNotice
    events: _containers.RepeatedCompositeFieldContainer[PodEvent]
    def __init__(self, phase: _Optional[str] = ..., conditions: _Optional[_Iterable[_Union[PodCondition, _Mapping]]] = ..., init_container_statuses: _Optional[_Iterable[_Union[ContainerStatus, _Mapping]]] = ..., container_statuses: _Optional[_Iterable[_Union[ContainerStatus, _Mapping]]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., pod_ip: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pod_uid: _Optional[str] = ..., version: _Optional[int] = ..., spot_notice: _Optional[_Union[SpotNotice, _Mapping]] = ..., events: _Optional[_Iterable[_Union[PodEvent, _Mapping]]] = ...) -> None: ...

class SpotNotice(_message.Message):
    __slots__ = ("kind", "action", "time")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    kind: str
    action: str
    time: str
    def __init__(self, kind: _Optional[str] = ..., action: _Optional[str] = ..., time: _Optional[str] = ...) -> None: ...

class PodCondition(_message.Message):
    __slots__ = ("type", "status", "reason", "message", "last_transition_time")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: _timestamp_pb2.Timestamp
    def __init__(self, type: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., last_transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ContainerStatus(_message.Message):
    __slots__ = ("name", "ready", "restart_count", "state", "last_state", "image", "started", "container_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    RESTART_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_STATE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    ready: bool
    restart_count: int
    state: ContainerState
    last_state: ContainerState
    image: str
    started: bool
    container_id: str
    def __init__(self, name: _Optional[str] = ..., ready: _Optional[bool] = ..., restart_count: _Optional[int] = ..., state: _Optional[_Union[ContainerState, _Mapping]] = ..., last_state: _Optional[_Union[ContainerState, _Mapping]] = ..., image: _Optional[str] = ..., started: _Optional[bool] = ..., container_id: _Optional[str] = ...) -> None: ...

class ContainerState(_message.Message):
    __slots__ = ("waiting", "running", "terminated")
    WAITING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    waiting: ContainerStateWaiting
    running: ContainerStateRunning
    terminated: ContainerStateTerminated
    def __init__(self, waiting: _Optional[_Union[ContainerStateWaiting, _Mapping]] = ..., running: _Optional[_Union[ContainerStateRunning, _Mapping]] = ..., terminated: _Optional[_Union[ContainerStateTerminated, _Mapping]] = ...) -> None: ...

class ContainerStateWaiting(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ContainerStateRunning(_message.Message):
    __slots__ = ("started_at",)
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ContainerStateTerminated(_message.Message):
    __slots__ = ("exit_code", "signal", "reason", "message", "started_at", "finished_at")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    signal: int
    reason: str
    message: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetLogsRequest(_message.Message):
    __slots__ = ("container", "follow", "tail_lines", "since_seconds", "timestamps", "previous", "limit_bytes")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    SINCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    container: str
    follow: bool
    tail_lines: int
    since_seconds: int
    timestamps: bool
    previous: bool
    limit_bytes: int
    def __init__(self, container: _Optional[str] = ..., follow: _Optional[bool] = ..., tail_lines: _Optional[int] = ..., since_seconds: _Optional[int] = ..., timestamps: _Optional[bool] = ..., previous: _Optional[bool] = ..., limit_bytes: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("start", "stdin", "resize", "close_stdin")
    START_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    stdin: bytes
    resize: TerminalSize
    close_stdin: bool
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., stdin: _Optional[bytes] = ..., resize: _Optional[_Union[TerminalSize, _Mapping]] = ..., close_stdin: _Optional[bool] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("container", "command", "tty", "stdin")
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    container: str
    command: _containers.RepeatedScalarFieldContainer[str]
    tty: bool
    stdin: bool
    def __init__(self, container: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., tty: _Optional[bool] = ..., stdin: _Optional[bool] = ...) -> None: ...

class TerminalSize(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class ExecResponse(_message.Message):
    __slots__ = ("stdout", "stderr", "exit_code")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exit_code: int
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit_code: _Optional[int] = ...) -> None: ...

class GetAgentIdentityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentIdentity(_message.Message):
    __slots__ = ("instance_id", "region", "availability_zone", "identity_document", "signature", "source", "mode", "agent_version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_ZONE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    region: str
    availability_zone: str
    identity_document: str
    signature: str
    source: str
    mode: str
    agent_version: str
    def __init__(self, instance_id: _Optional[str] = ..., region: _Optional[str] = ..., availability_zone: _Optional[str] = ..., identity_document: _Optional[str] = ..., signature: _Optional[str] = ..., source: _Optional[str] = ..., mode: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class CreateCertificateRequestRequest(_message.Message):
    __slots__ = ("nonce",)
    NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    def __init__(self, nonce: _Optional[bytes] = ...) -> None: ...

class CertificateRequest(_message.Message):
    __slots__ = ("csr_pem", "identity_document", "signature", "proof")
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    identity_document: str
    signature: str
    proof: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ..., identity_document: _Optional[str] = ..., signature: _Optional[str] = ..., proof: _Optional[bytes] = ...) -> None: ...

class LaunchAuthenticatedEndpointRequest(_message.Message):
    __slots__ = ("server_cert_pem", "ca_chain_pem")
    SERVER_CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    server_cert_pem: bytes
    ca_chain_pem: bytes
    def __init__(self, server_cert_pem: _Optional[bytes] = ..., ca_chain_pem: _Optional[bytes] = ...) -> None: ...

class LaunchAuthenticatedEndpointResponse(_message.Message):
    __slots__ = ("mode",)
    MODE_FIELD_NUMBER: _ClassVar[int]
    mode: str
    def __init__(self, mode: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InstanceStats(_message.Message):
    __slots__ = ("time", "boot_time", "cpu", "memory", "root_fs", "pod_fs", "interfaces", "containers", "source")
    TIME_FIELD_NUMBER: _ClassVar[int]
    BOOT_TIME_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    ROOT_FS_FIELD_NUMBER: _ClassVar[int]
    POD_FS_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    boot_time: _timestamp_pb2.Timestamp
    cpu: CpuUsage
    memory: MemoryUsage
    root_fs: FsUsage
    pod_fs: FsUsage
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceUsage]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerUsage]
    source: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., boot_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cpu: _Optional[_Union[CpuUsage, _Mapping]] = ..., memory: _Optional[_Union[MemoryUsage, _Mapping]] = ..., root_fs: _Optional[_Union[FsUsage, _Mapping]] = ..., pod_fs: _Optional[_Union[FsUsage, _Mapping]] = ..., interfaces: _Optional[_Iterable[_Union[InterfaceUsage, _Mapping]]] = ..., containers: _Optional[_Iterable[_Union[ContainerUsage, _Mapping]]] = ..., source: _Optional[str] = ...) -> None: ...

class CpuUsage(_message.Message):
    __slots__ = ("usage_core_nano_seconds", "usage_nano_cores")
    USAGE_CORE_NANO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USAGE_NANO_CORES_FIELD_NUMBER: _ClassVar[int]
    usage_core_nano_seconds: int
    usage_nano_cores: int
    def __init__(self, usage_core_nano_seconds: _Optional[int] = ..., usage_nano_cores: _Optional[int] = ...) -> None: ...

class MemoryUsage(_message.Message):
    __slots__ = ("working_set_bytes", "usage_bytes", "rss_bytes", "available_bytes", "page_faults", "major_page_faults")
    WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    MAJOR_PAGE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    working_set_bytes: int
    usage_bytes: int
    rss_bytes: int
    available_bytes: int
    page_faults: int
    major_page_faults: int
    def __init__(self, working_set_bytes: _Optional[int] = ..., usage_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., available_bytes: _Optional[int] = ..., page_faults: _Optional[int] = ..., major_page_faults: _Optional[int] = ...) -> None: ...

class FsUsage(_message.Message):
    __slots__ = ("path", "capacity_bytes", "used_bytes", "available_bytes", "inodes", "inodes_free")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INODES_FIELD_NUMBER: _ClassVar[int]
    INODES_FREE_FIELD_NUMBER: _ClassVar[int]
    path: str
    capacity_bytes: int
    used_bytes: int
    available_bytes: int
    inodes: int
    inodes_free: int
    def __init__(self, path: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., available_bytes: _Optional[int] = ..., inodes: _Optional[int] = ..., inodes_free: _Optional[int] = ...) -> None: ...

class InterfaceUsage(_message.Message):
    __slots__ = ("name", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    TX_ERRORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    def __init__(self, name: _Optional[str] = ..., rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., rx_errors: _Optional[int] = ..., tx_errors: _Optional[int] = ...) -> None: ...

class ContainerUsage(_message.Message):
    __slots__ = ("name", "start_time", "cpu", "memory")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_time: _timestamp_pb2.Timestamp
    cpu: CpuUsage
    memory: MemoryUsage
    def __init__(self, name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cpu: _Optional[_Union[CpuUsage, _Mapping]] = ..., memory: _Optional[_Union[MemoryUsage, _Mapping]] = ...) -> None: ...

class PodEvent(_message.Message):
    __slots__ = ("seq", "type", "reason", "message", "container", "count", "first_timestamp", "last_timestamp")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LAST_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    seq: int
    type: str
    reason: str
    message: str
    container: str
    count: int
    first_timestamp: _timestamp_pb2.Timestamp
    last_timestamp: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., type: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., container: _Optional[str] = ..., count: _Optional[int] = ..., first_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateVolumesRequest(_message.Message):
    __slots__ = ("pod_uid", "resolved_json")
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_JSON_FIELD_NUMBER: _ClassVar[int]
    pod_uid: str
    resolved_json: str
    def __init__(self, pod_uid: _Optional[str] = ..., resolved_json: _Optional[str] = ...) -> None: ...

class UpdateVolumesResponse(_message.Message):
    __slots__ = ("changed",)
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, changed: _Optional[_Iterable[str]] = ...) -> None: ...

class PortForwardRequest(_message.Message):
    __slots__ = ("start", "data", "close_write")
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSE_WRITE_FIELD_NUMBER: _ClassVar[int]
    start: PortForwardStart
    data: bytes
    close_write: bool
    def __init__(self, start: _Optional[_Union[PortForwardStart, _Mapping]] = ..., data: _Optional[bytes] = ..., close_write: _Optional[bool] = ...) -> None: ...

class PortForwardStart(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class PortForwardResponse(_message.Message):
    __slots__ = ("connected", "data")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    connected: bool
    data: bytes
    def __init__(self, connected: _Optional[bool] = ..., data: _Optional[bytes] = ...) -> None: ...
