from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterPushRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: bytes
    def __init__(self, token: _Optional[bytes] = ...) -> None: ...

class RegisterPushResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Ephemeral(_message.Message):
    __slots__ = ("ciphertext",)
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    def __init__(self, ciphertext: _Optional[bytes] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("ack_sequences", "device_id")
    ACK_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ack_sequences: _containers.RepeatedScalarFieldContainer[int]
    device_id: str
    def __init__(self, ack_sequences: _Optional[_Iterable[int]] = ..., device_id: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("sequence", "message_id", "ciphertext", "stored_at_ms")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    message_id: bytes
    ciphertext: bytes
    stored_at_ms: int
    def __init__(self, sequence: _Optional[int] = ..., message_id: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., stored_at_ms: _Optional[int] = ...) -> None: ...

class BacklogDone(_message.Message):
    __slots__ = ("delivered",)
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    def __init__(self, delivered: _Optional[int] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("envelopes", "backlog_done", "ephemeral")
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_DONE_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[Envelope]
    backlog_done: BacklogDone
    ephemeral: _containers.RepeatedCompositeFieldContainer[Ephemeral]
    def __init__(self, envelopes: _Optional[_Iterable[_Union[Envelope, _Mapping]]] = ..., backlog_done: _Optional[_Union[BacklogDone, _Mapping]] = ..., ephemeral: _Optional[_Iterable[_Union[Ephemeral, _Mapping]]] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("sequences",)
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    sequences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sequences: _Optional[_Iterable[int]] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class PurgeRevokedMailboxesRequest(_message.Message):
    __slots__ = ("device_ids",)
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PurgeRevokedMailboxesResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
