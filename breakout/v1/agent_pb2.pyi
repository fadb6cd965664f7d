from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScreenFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCREEN_FORMAT_UNSPECIFIED: _ClassVar[ScreenFormat]
    SCREEN_FORMAT_RGB: _ClassVar[ScreenFormat]
    SCREEN_FORMAT_GRAYSCALE: _ClassVar[ScreenFormat]
SCREEN_FORMAT_UNSPECIFIED: ScreenFormat
SCREEN_FORMAT_RGB: ScreenFormat
SCREEN_FORMAT_GRAYSCALE: ScreenFormat

class GameFrame(_message.Message):
    __slots__ = ("screens", "format", "lives", "new_game", "return_q_values", "return_stack")
    SCREENS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LIVES_FIELD_NUMBER: _ClassVar[int]
    NEW_GAME_FIELD_NUMBER: _ClassVar[int]
    RETURN_Q_VALUES_FIELD_NUMBER: _ClassVar[int]
    RETURN_STACK_FIELD_NUMBER: _ClassVar[int]
    screens: bytes
    format: ScreenFormat
    lives: int
    new_game: bool
    return_q_values: bool
    return_stack: bool
    def __init__(self, screens: _Optional[bytes] = ..., format: _Optional[_Union[ScreenFormat, str]] = ..., lives: _Optional[int] = ..., new_game: _Optional[bool] = ..., return_q_values: _Optional[bool] = ..., return_stack: _Optional[bool] = ...) -> None: ...

class GameAction(_message.Message):
    __slots__ = ("action", "serve_policy", "q_values", "stack", "model_version")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SERVE_POLICY_FIELD_NUMBER: _ClassVar[int]
    Q_VALUES_FIELD_NUMBER: _ClassVar[int]
    STACK_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    action: int
    serve_policy: bool
    q_values: _containers.RepeatedScalarFieldContainer[float]
    stack: bytes
    model_version: str
    def __init__(self, action: _Optional[int] = ..., serve_policy: _Optional[bool] = ..., q_values: _Optional[_Iterable[float]] = ..., stack: _Optional[bytes] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetActionRequest(_message.Message):
    __slots__ = ("frames", "return_q_values")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    RETURN_Q_VALUES_FIELD_NUMBER: _ClassVar[int]
    frames: bytes
    return_q_values: bool
    def __init__(self, frames: _Optional[bytes] = ..., return_q_values: _Optional[bool] = ...) -> None: ...

class GetActionResponse(_message.Message):
    __slots__ = ("actions", "q_values", "model_version")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    Q_VALUES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedScalarFieldContainer[int]
    q_values: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    def __init__(self, actions: _Optional[_Iterable[int]] = ..., q_values: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_version", "action_meanings", "preprocessing", "serve_policy", "contract_version", "input", "output", "stack_bytes", "max_stacks_per_request", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTION_MEANINGS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    SERVE_POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STACK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STACKS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    action_meanings: _containers.RepeatedScalarFieldContainer[str]
    preprocessing: str
    serve_policy: str
    contract_version: str
    input: TensorSpec
    output: TensorSpec
    stack_bytes: int
    max_stacks_per_request: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, model_version: _Optional[str] = ..., action_meanings: _Optional[_Iterable[str]] = ..., preprocessing: _Optional[str] = ..., serve_policy: _Optional[str] = ..., contract_version: _Optional[str] = ..., input: _Optional[_Union[TensorSpec, _Mapping]] = ..., output: _Optional[_Union[TensorSpec, _Mapping]] = ..., stack_bytes: _Optional[int] = ..., max_stacks_per_request: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...
