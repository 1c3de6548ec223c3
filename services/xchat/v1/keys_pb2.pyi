from xchat.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PurgeRevokedPrekeysRequest(_message.Message):
    __slots__ = ("device_ids",)
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PurgeRevokedPrekeysResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...

class UploadPrekeysRequest(_message.Message):
    __slots__ = ("signed_prekey", "one_time_prekeys", "pq_one_time_prekeys", "pq_last_resort_prekey")
    SIGNED_PREKEY_FIELD_NUMBER: _ClassVar[int]
    ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    PQ_ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    PQ_LAST_RESORT_PREKEY_FIELD_NUMBER: _ClassVar[int]
    signed_prekey: _common_pb2.SignedPrekey
    one_time_prekeys: _containers.RepeatedCompositeFieldContainer[_common_pb2.OneTimePrekey]
    pq_one_time_prekeys: _containers.RepeatedCompositeFieldContainer[_common_pb2.SignedPrekey]
    pq_last_resort_prekey: _common_pb2.SignedPrekey
    def __init__(self, signed_prekey: _Optional[_Union[_common_pb2.SignedPrekey, _Mapping]] = ..., one_time_prekeys: _Optional[_Iterable[_Union[_common_pb2.OneTimePrekey, _Mapping]]] = ..., pq_one_time_prekeys: _Optional[_Iterable[_Union[_common_pb2.SignedPrekey, _Mapping]]] = ..., pq_last_resort_prekey: _Optional[_Union[_common_pb2.SignedPrekey, _Mapping]] = ...) -> None: ...

class UploadPrekeysResponse(_message.Message):
    __slots__ = ("one_time_prekeys", "pq_one_time_prekeys")
    ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    PQ_ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    one_time_prekeys: int
    pq_one_time_prekeys: int
    def __init__(self, one_time_prekeys: _Optional[int] = ..., pq_one_time_prekeys: _Optional[int] = ...) -> None: ...

class FetchBundlesRequest(_message.Message):
    __slots__ = ("account", "device_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    device_id: str
    def __init__(self, account: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class PrekeyBundle(_message.Message):
    __slots__ = ("account", "device_id", "identity_key", "signed_prekey", "one_time_prekey", "pq_prekey", "pq_prekey_is_last_resort")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_PREKEY_FIELD_NUMBER: _ClassVar[int]
    ONE_TIME_PREKEY_FIELD_NUMBER: _ClassVar[int]
    PQ_PREKEY_FIELD_NUMBER: _ClassVar[int]
    PQ_PREKEY_IS_LAST_RESORT_FIELD_NUMBER: _ClassVar[int]
    account: str
    device_id: str
    identity_key: bytes
    signed_prekey: _common_pb2.SignedPrekey
    one_time_prekey: _common_pb2.OneTimePrekey
    pq_prekey: _common_pb2.SignedPrekey
    pq_prekey_is_last_resort: bool
    def __init__(self, account: _Optional[str] = ..., device_id: _Optional[str] = ..., identity_key: _Optional[bytes] = ..., signed_prekey: _Optional[_Union[_common_pb2.SignedPrekey, _Mapping]] = ..., one_time_prekey: _Optional[_Union[_common_pb2.OneTimePrekey, _Mapping]] = ..., pq_prekey: _Optional[_Union[_common_pb2.SignedPrekey, _Mapping]] = ..., pq_prekey_is_last_resort: _Optional[bool] = ...) -> None: ...

class FetchBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[PrekeyBundle]
    def __init__(self, bundles: _Optional[_Iterable[_Union[PrekeyBundle, _Mapping]]] = ...) -> None: ...

class CountPrekeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CountPrekeysResponse(_message.Message):
    __slots__ = ("one_time_prekeys", "pq_one_time_prekeys")
    ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    PQ_ONE_TIME_PREKEYS_FIELD_NUMBER: _ClassVar[int]
    one_time_prekeys: int
    pq_one_time_prekeys: int
    def __init__(self, one_time_prekeys: _Optional[int] = ..., pq_one_time_prekeys: _Optional[int] = ...) -> None: ...
