from xchat.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteAccountRequest(_message.Message):
    __slots__ = ("signature",)
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    def __init__(self, signature: _Optional[bytes] = ...) -> None: ...

class DeleteAccountResponse(_message.Message):
    __slots__ = ("device_ids", "name_held_until_ms")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    NAME_HELD_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    name_held_until_ms: int
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., name_held_until_ms: _Optional[int] = ...) -> None: ...

class SignedDeviceList(_message.Message):
    __slots__ = ("body", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PublishDeviceListRequest(_message.Message):
    __slots__ = ("device_list",)
    DEVICE_LIST_FIELD_NUMBER: _ClassVar[int]
    device_list: SignedDeviceList
    def __init__(self, device_list: _Optional[_Union[SignedDeviceList, _Mapping]] = ...) -> None: ...

class PublishDeviceListResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class PutProvisioningRequest(_message.Message):
    __slots__ = ("rendezvous_id", "ciphertext")
    RENDEZVOUS_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    rendezvous_id: bytes
    ciphertext: bytes
    def __init__(self, rendezvous_id: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class PutProvisioningResponse(_message.Message):
    __slots__ = ("expires_at_ms",)
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    expires_at_ms: int
    def __init__(self, expires_at_ms: _Optional[int] = ...) -> None: ...

class TakeProvisioningRequest(_message.Message):
    __slots__ = ("rendezvous_id",)
    RENDEZVOUS_ID_FIELD_NUMBER: _ClassVar[int]
    rendezvous_id: bytes
    def __init__(self, rendezvous_id: _Optional[bytes] = ...) -> None: ...

class TakeProvisioningResponse(_message.Message):
    __slots__ = ("ciphertext",)
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    def __init__(self, ciphertext: _Optional[bytes] = ...) -> None: ...

class SetDeliveryVerifierRequest(_message.Message):
    __slots__ = ("verifier", "sealed_from_anyone")
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    SEALED_FROM_ANYONE_FIELD_NUMBER: _ClassVar[int]
    verifier: bytes
    sealed_from_anyone: bool
    def __init__(self, verifier: _Optional[bytes] = ..., sealed_from_anyone: _Optional[bool] = ...) -> None: ...

class SetDeliveryVerifierResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("account", "identity_key", "signature", "account_key", "account_key_signature")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_KEY_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_KEY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    account: str
    identity_key: bytes
    signature: bytes
    account_key: bytes
    account_key_signature: bytes
    def __init__(self, account: _Optional[str] = ..., identity_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., account_key: _Optional[bytes] = ..., account_key_signature: _Optional[bytes] = ...) -> None: ...

class AddDeviceRequest(_message.Message):
    __slots__ = ("identity_key", "signature", "account_signature")
    IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    identity_key: bytes
    signature: bytes
    account_signature: bytes
    def __init__(self, identity_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., account_signature: _Optional[bytes] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("account", "device_id")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    account: str
    device_id: str
    def __init__(self, account: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class ChallengeRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class ChallengeResponse(_message.Message):
    __slots__ = ("nonce", "expires_at_ms")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    expires_at_ms: int
    def __init__(self, nonce: _Optional[bytes] = ..., expires_at_ms: _Optional[int] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("device_id", "nonce", "signature")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    nonce: bytes
    signature: bytes
    def __init__(self, device_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TokenResponse(_message.Message):
    __slots__ = ("access_token", "access_expires_at_ms", "refresh_token", "refresh_expires_at_ms", "account", "device_id")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCESS_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    access_expires_at_ms: int
    refresh_token: str
    refresh_expires_at_ms: int
    account: str
    device_id: str
    def __init__(self, access_token: _Optional[str] = ..., access_expires_at_ms: _Optional[int] = ..., refresh_token: _Optional[str] = ..., refresh_expires_at_ms: _Optional[int] = ..., account: _Optional[str] = ..., device_id: _Optional[str] = ...) -> None: ...

class RefreshRequest(_message.Message):
    __slots__ = ("refresh_token",)
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    refresh_token: str
    def __init__(self, refresh_token: _Optional[str] = ...) -> None: ...

class RevokeDeviceRequest(_message.Message):
    __slots__ = ("device_id", "device_list")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LIST_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_list: SignedDeviceList
    def __init__(self, device_id: _Optional[str] = ..., device_list: _Optional[_Union[SignedDeviceList, _Mapping]] = ...) -> None: ...

class RevokeDeviceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "account_key", "device_list")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_KEY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LIST_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.Device]
    account_key: bytes
    device_list: SignedDeviceList
    def __init__(self, devices: _Optional[_Iterable[_Union[_common_pb2.Device, _Mapping]]] = ..., account_key: _Optional[bytes] = ..., device_list: _Optional[_Union[SignedDeviceList, _Mapping]] = ...) -> None: ...

class EpochHead(_message.Message):
    __slots__ = ("epoch", "map_root", "entries_upto", "time_ms", "log_root", "key_id", "signature")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MAP_ROOT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_UPTO_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    LOG_ROOT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    map_root: bytes
    entries_upto: int
    time_ms: int
    log_root: bytes
    key_id: str
    signature: bytes
    def __init__(self, epoch: _Optional[int] = ..., map_root: _Optional[bytes] = ..., entries_upto: _Optional[int] = ..., time_ms: _Optional[int] = ..., log_root: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class LookupKeyRequest(_message.Message):
    __slots__ = ("account", "known_epoch", "audit_statements")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    KNOWN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    account: str
    known_epoch: int
    audit_statements: bool
    def __init__(self, account: _Optional[str] = ..., known_epoch: _Optional[int] = ..., audit_statements: _Optional[bool] = ...) -> None: ...

class LookupKeyResponse(_message.Message):
    __slots__ = ("head", "directory_key", "found", "account_key", "version", "device_list", "map_siblings", "path_leaf_key", "path_leaf_value", "consistency_proof", "head_inclusion_proof", "epoch_interval_ms", "audit_statements")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_KEY_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LIST_FIELD_NUMBER: _ClassVar[int]
    MAP_SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    PATH_LEAF_KEY_FIELD_NUMBER: _ClassVar[int]
    PATH_LEAF_VALUE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_PROOF_FIELD_NUMBER: _ClassVar[int]
    HEAD_INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    EPOCH_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    head: EpochHead
    directory_key: bytes
    found: bool
    account_key: bytes
    version: int
    device_list: SignedDeviceList
    map_siblings: _containers.RepeatedScalarFieldContainer[bytes]
    path_leaf_key: bytes
    path_leaf_value: bytes
    consistency_proof: _containers.RepeatedScalarFieldContainer[bytes]
    head_inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    epoch_interval_ms: int
    audit_statements: _containers.RepeatedCompositeFieldContainer[AuditStatement]
    def __init__(self, head: _Optional[_Union[EpochHead, _Mapping]] = ..., directory_key: _Optional[bytes] = ..., found: _Optional[bool] = ..., account_key: _Optional[bytes] = ..., version: _Optional[int] = ..., device_list: _Optional[_Union[SignedDeviceList, _Mapping]] = ..., map_siblings: _Optional[_Iterable[bytes]] = ..., path_leaf_key: _Optional[bytes] = ..., path_leaf_value: _Optional[bytes] = ..., consistency_proof: _Optional[_Iterable[bytes]] = ..., head_inclusion_proof: _Optional[_Iterable[bytes]] = ..., epoch_interval_ms: _Optional[int] = ..., audit_statements: _Optional[_Iterable[_Union[AuditStatement, _Mapping]]] = ...) -> None: ...

class AuditStatement(_message.Message):
    __slots__ = ("statement", "consistency_proof")
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_PROOF_FIELD_NUMBER: _ClassVar[int]
    statement: bytes
    consistency_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, statement: _Optional[bytes] = ..., consistency_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ProveConsistencyRequest(_message.Message):
    __slots__ = ("first_epoch", "second_epoch")
    FIRST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SECOND_EPOCH_FIELD_NUMBER: _ClassVar[int]
    first_epoch: int
    second_epoch: int
    def __init__(self, first_epoch: _Optional[int] = ..., second_epoch: _Optional[int] = ...) -> None: ...

class ProveConsistencyResponse(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PublishAuditStatementRequest(_message.Message):
    __slots__ = ("statement",)
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    statement: bytes
    def __init__(self, statement: _Optional[bytes] = ...) -> None: ...

class PublishAuditStatementResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuditLogRequest(_message.Message):
    __slots__ = ("from_epoch", "after_entry", "max_epochs")
    FROM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_ENTRY_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    from_epoch: int
    after_entry: int
    max_epochs: int
    def __init__(self, from_epoch: _Optional[int] = ..., after_entry: _Optional[int] = ..., max_epochs: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("sequence", "account", "account_key", "version", "device_list")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_LIST_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    account: str
    account_key: bytes
    version: int
    device_list: SignedDeviceList
    def __init__(self, sequence: _Optional[int] = ..., account: _Optional[str] = ..., account_key: _Optional[bytes] = ..., version: _Optional[int] = ..., device_list: _Optional[_Union[SignedDeviceList, _Mapping]] = ...) -> None: ...

class DirectoryKey(_message.Message):
    __slots__ = ("key_id", "public_key")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class AuditLogResponse(_message.Message):
    __slots__ = ("heads", "entries", "directory_keys")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_KEYS_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[EpochHead]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    directory_keys: _containers.RepeatedCompositeFieldContainer[DirectoryKey]
    def __init__(self, heads: _Optional[_Iterable[_Union[EpochHead, _Mapping]]] = ..., entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., directory_keys: _Optional[_Iterable[_Union[DirectoryKey, _Mapping]]] = ...) -> None: ...
