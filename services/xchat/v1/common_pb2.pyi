from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class SignedPrekey(_message.Message):
    __slots__ = ("key_id", "public_key", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: int
    public_key: bytes
    signature: bytes
    def __init__(self, key_id: _Optional[int] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class OneTimePrekey(_message.Message):
    __slots__ = ("key_id", "public_key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: int
    public_key: bytes
    def __init__(self, key_id: _Optional[int] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("device_id", "account", "identity_key", "revoked", "created_at_ms")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    account: str
    identity_key: bytes
    revoked: bool
    created_at_ms: int
    def __init__(self, device_id: _Optional[str] = ..., account: _Optional[str] = ..., identity_key: _Optional[bytes] = ..., revoked: _Optional[bool] = ..., created_at_ms: _Optional[int] = ...) -> None: ...
