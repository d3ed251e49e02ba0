from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferRequest(_message.Message):
    __slots__ = ("op", "model", "items", "params", "request_id", "machine_profile", "pool", "bundle", "wait_seconds", "respond_async")
    OP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MACHINE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESPOND_ASYNC_FIELD_NUMBER: _ClassVar[int]
    op: str
    model: str
    items: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    params: _struct_pb2.Struct
    request_id: str
    machine_profile: str
    pool: str
    bundle: str
    wait_seconds: int
    respond_async: bool
    def __init__(self, op: _Optional[str] = ..., model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., machine_profile: _Optional[str] = ..., pool: _Optional[str] = ..., bundle: _Optional[str] = ..., wait_seconds: _Optional[int] = ..., respond_async: _Optional[bool] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("result", "accepted", "request_id", "preference_applied")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_APPLIED_FIELD_NUMBER: _ClassVar[int]
    result: Result
    accepted: Accepted
    request_id: str
    preference_applied: str
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., request_id: _Optional[str] = ..., preference_applied: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("id", "model", "items", "worker", "timing")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    items: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    worker: str
    timing: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ..., worker: _Optional[str] = ..., timing: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("job_id", "status", "machine_profile", "bundle", "pool", "estimated_wait_s", "retry_after_s", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MACHINE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    machine_profile: str
    bundle: str
    pool: str
    estimated_wait_s: float
    retry_after_s: int
    message: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., machine_profile: _Optional[str] = ..., bundle: _Optional[str] = ..., pool: _Optional[str] = ..., estimated_wait_s: _Optional[float] = ..., retry_after_s: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class InferStreamResponse(_message.Message):
    __slots__ = ("chunk", "end", "accepted", "request_id")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    chunk: StreamChunk
    end: StreamEnd
    accepted: Accepted
    request_id: str
    def __init__(self, chunk: _Optional[_Union[StreamChunk, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StreamChunk(_message.Message):
    __slots__ = ("seq", "payload")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    seq: int
    payload: _struct_pb2.Value
    def __init__(self, seq: _Optional[int] = ..., payload: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("chunks", "usage")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    usage: _containers.ScalarMap[str, int]
    def __init__(self, chunks: _Optional[int] = ..., usage: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "error_id")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_ID_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    error_id: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., error_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "result", "error", "model", "pool", "machine_profile", "bundle", "updated_at", "estimated_wait_s", "kind", "op", "attempts", "created_at", "started_at", "deadline", "queue_position")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    MACHINE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    result: Result
    error: Error
    model: str
    pool: str
    machine_profile: str
    bundle: str
    updated_at: float
    estimated_wait_s: float
    kind: str
    op: str
    attempts: int
    created_at: float
    started_at: float
    deadline: float
    queue_position: int
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., model: _Optional[str] = ..., pool: _Optional[str] = ..., machine_profile: _Optional[str] = ..., bundle: _Optional[str] = ..., updated_at: _Optional[float] = ..., estimated_wait_s: _Optional[float] = ..., kind: _Optional[str] = ..., op: _Optional[str] = ..., attempts: _Optional[int] = ..., created_at: _Optional[float] = ..., started_at: _Optional[float] = ..., deadline: _Optional[float] = ..., queue_position: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "model", "kind", "since", "until", "limit", "cursor", "tenant")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    state: _containers.RepeatedScalarFieldContainer[str]
    model: str
    kind: str
    since: float
    until: float
    limit: int
    cursor: str
    tenant: str
    def __init__(self, state: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., kind: _Optional[str] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_cursor")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_cursor: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job", "cancelled", "message")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job: Job
    cancelled: bool
    message: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., cancelled: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("job_id", "deleted")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    deleted: bool
    def __init__(self, job_id: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...
