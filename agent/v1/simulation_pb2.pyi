from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForcedState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORCED_STATE_UNSPECIFIED: _ClassVar[ForcedState]
    FORCED_STATE_RUNNING: _ClassVar[ForcedState]
    FORCED_STATE_FAILED: _ClassVar[ForcedState]
    FORCED_STATE_UNKNOWN: _ClassVar[ForcedState]
    FORCED_STATE_NOT_SERVING: _ClassVar[ForcedState]
    FORCED_STATE_SUCCEEDED: _ClassVar[ForcedState]
    FORCED_STATE_PENDING: _ClassVar[ForcedState]
FORCED_STATE_UNSPECIFIED: ForcedState
FORCED_STATE_RUNNING: ForcedState
FORCED_STATE_FAILED: ForcedState
FORCED_STATE_UNKNOWN: ForcedState
FORCED_STATE_NOT_SERVING: ForcedState
FORCED_STATE_SUCCEEDED: ForcedState
FORCED_STATE_PENDING: ForcedState

class SetApplicationStateRequest(_message.Message):
    __slots__ = ("state", "delay_ms", "no_answer", "reason", "message", "exit_code", "spot_notice")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    NO_ANSWER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SPOT_NOTICE_FIELD_NUMBER: _ClassVar[int]
    state: ForcedState
    delay_ms: int
    no_answer: bool
    reason: str
    message: str
    exit_code: int
    spot_notice: str
    def __init__(self, state: _Optional[_Union[ForcedState, str]] = ..., delay_ms: _Optional[int] = ..., no_answer: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., spot_notice: _Optional[str] = ...) -> None: ...

class ClearApplicationStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSimulationStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetRandomStatusRequest(_message.Message):
    __slots__ = ("enabled", "seed")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    seed: int
    def __init__(self, enabled: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class SimulationState(_message.Message):
    __slots__ = ("state", "delay_ms", "no_answer", "reason", "message", "exit_code", "random_status", "seed", "spot_notice")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    NO_ANSWER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_STATUS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPOT_NOTICE_FIELD_NUMBER: _ClassVar[int]
    state: ForcedState
    delay_ms: int
    no_answer: bool
    reason: str
    message: str
    exit_code: int
    random_status: bool
    seed: int
    spot_notice: str
    def __init__(self, state: _Optional[_Union[ForcedState, str]] = ..., delay_ms: _Optional[int] = ..., no_answer: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ..., random_status: _Optional[bool] = ..., seed: _Optional[int] = ..., spot_notice: _Optional[str] = ...) -> None: ...
