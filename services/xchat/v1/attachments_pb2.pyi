from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadState(_message.Message):
    __slots__ = ("attachment_id", "size", "chunk_bytes", "committed", "complete", "expires_at_ms")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    attachment_id: bytes
    size: int
    chunk_bytes: int
    committed: int
    complete: bool
    expires_at_ms: int
    def __init__(self, attachment_id: _Optional[bytes] = ..., size: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., committed: _Optional[int] = ..., complete: _Optional[bool] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class BeginUploadRequest(_message.Message):
    __slots__ = ("attachment_id", "size")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    attachment_id: bytes
    size: int
    def __init__(self, attachment_id: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class BeginUploadResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: UploadState
    def __init__(self, state: _Optional[_Union[UploadState, _Mapping]] = ...) -> None: ...

class UploadChunkRequest(_message.Message):
    __slots__ = ("attachment_id", "index", "data")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    attachment_id: bytes
    index: int
    data: bytes
    def __init__(self, attachment_id: _Optional[bytes] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadChunkResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: UploadState
    def __init__(self, state: _Optional[_Union[UploadState, _Mapping]] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("attachment_id", "offset")
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    attachment_id: bytes
    offset: int
    def __init__(self, attachment_id: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class DeleteAttachmentRequest(_message.Message):
    __slots__ = ("attachment_id",)
    ATTACHMENT_ID_FIELD_NUMBER: _ClassVar[int]
    attachment_id: bytes
    def __init__(self, attachment_id: _Optional[bytes] = ...) -> None: ...

class DeleteAttachmentResponse(_message.Message):
    __slots__ = ("deleted_bytes",)
    DELETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    deleted_bytes: int
    def __init__(self, deleted_bytes: _Optional[int] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("offset", "data", "size")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    size: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...
