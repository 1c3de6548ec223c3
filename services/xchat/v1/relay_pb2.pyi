from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EphemeralItem(_message.Message):
    __slots__ = ("recipient_device_id", "ciphertext")
    RECIPIENT_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    recipient_device_id: str
    ciphertext: bytes
    def __init__(self, recipient_device_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class EphemeralBatch(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EphemeralItem]
    def __init__(self, items: _Optional[_Iterable[_Union[EphemeralItem, _Mapping]]] = ...) -> None: ...

class EphemeralAccepted(_message.Message):
    __slots__ = ("published",)
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    published: int
    def __init__(self, published: _Optional[int] = ...) -> None: ...

class SendBatch(_message.Message):
    __slots__ = ("envelopes",)
    ENVELOPES_FIELD_NUMBER: _ClassVar[int]
    envelopes: _containers.RepeatedCompositeFieldContainer[SendRequest]
    def __init__(self, envelopes: _Optional[_Iterable[_Union[SendRequest, _Mapping]]] = ...) -> None: ...

class SendBatchResult(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SendResult, _Mapping]]] = ...) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("recipient_device_id", "message_id", "ciphertext", "delivery_key", "ttl_seconds")
    RECIPIENT_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    recipient_device_id: str
    message_id: bytes
    ciphertext: bytes
    delivery_key: bytes
    ttl_seconds: int
    def __init__(self, recipient_device_id: _Optional[str] = ..., message_id: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., delivery_key: _Optional[bytes] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class SendResult(_message.Message):
    __slots__ = ("message_id", "sequence", "duplicate", "stored_at_ms", "error_code", "error_message", "recipient_device_id", "receipt")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    message_id: bytes
    sequence: int
    duplicate: bool
    stored_at_ms: int
    error_code: int
    error_message: str
    recipient_device_id: str
    receipt: bytes
    def __init__(self, message_id: _Optional[bytes] = ..., sequence: _Optional[int] = ..., duplicate: _Optional[bool] = ..., stored_at_ms: _Optional[int] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., recipient_device_id: _Optional[str] = ..., receipt: _Optional[bytes] = ...) -> None: ...
