"""Every RPC of every service, fed arbitrary bytes and arbitrary valid messages (issue 17).

For each method named by the ``xchat.v1`` descriptors, hypothesis sends
either arbitrary bytes (not necessarily a protobuf) or a message built from
the method's request descriptor (every field drawn from its type, biased
towards values that reach deep: real device ids and accounts, keys of the
right sizes, uint64 extremes), as an anonymous caller, with a junk token, or
as a registered device. Properties:

* the answer is OK or a status of ``DOCUMENTED`` (never UNKNOWN, INTERNAL,
  UNAVAILABLE or a deadline: nothing the caller sends may break a servicer);
* the services log no traceback ("unexpected error");
* afterwards the mesh is healthy: another user's send and receive work.

One private single-region mesh for the module (the rate limits are raised so
that requests reach the servicers instead of the limiter, and so the shared
mesh's per-address budgets are not spent for other tests). Derandomized:
CI sends the same requests every run. ~40 s on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import nacl.signing
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xchat.core.tokens import MAX_TOKEN_CHARS
from xchat.mesh.local import LocalMesh
from xchat.statements import login_statement, prekey_statement, register_statement
from xchat.v1 import attachments_pb2
from xchat.v1 import auth_pb2, auth_pb2_grpc, common_pb2, keys_pb2, keys_pb2_grpc, mailbox_pb2, mailbox_pb2_grpc, relay_pb2, relay_pb2_grpc

FIELD = pb_descriptor.FieldDescriptor
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# Per RPC; XCHAT_FUZZ_EXAMPLES=1000 explores longer (still derandomized: same run, same requests).
EXAMPLES = int(os.environ.get("XCHAT_FUZZ_EXAMPLES", "60"))
CALL_TIMEOUT_S = 10.0
# Answers that say "try again" (a store slow to answer under load, a deadline): retried as is.
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
TRANSIENT_RETRIES = 3
TRANSIENT_PAUSE_S = 1.0
# High enough that the fuzzer's calls reach the servicers (the limiter is tested elsewhere).
LIMITS = {
    "XCHAT_AUTH_RATE": "100000", "XCHAT_AUTH_BURST": "100000",
    "XCHAT_CALL_RATE": "100000", "XCHAT_CALL_BURST": "100000",
    "XCHAT_FETCH_RATE": "100000", "XCHAT_FETCH_BURST": "100000",
    "XCHAT_SEND_RATE": "100000", "XCHAT_SEND_BURST": "100000",
}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def _methods() -> list[tuple[str, pb_descriptor.MethodDescriptor]]:
    out = []
    for module in (auth_pb2, keys_pb2, relay_pb2, mailbox_pb2, attachments_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out.append((f"/{service.full_name}/{method.name}", method))
    return out


METHODS = _methods()


# -- a registered device over the synchronous stubs ---------------------------------------------


@dataclass
class Device:
    account: str
    key: nacl.signing.SigningKey
    device_id: str
    token: str
    refresh: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def _register(channel: grpc.Channel, account: str | None = None) -> Device:
    auth = auth_pb2_grpc.AuthStub(channel)
    account = account or f"f{secrets.token_hex(6)}"
    key = nacl.signing.SigningKey.generate()
    ik = bytes(key.verify_key)
    reply = auth.Register(
        auth_pb2.RegisterRequest(account=account, identity_key=ik, signature=key.sign(register_statement(account, ik)).signature),
        timeout=CALL_TIMEOUT_S,
    )
    challenge = auth.Challenge(auth_pb2.ChallengeRequest(device_id=reply.device_id), timeout=CALL_TIMEOUT_S)
    tokens = auth.Login(
        auth_pb2.LoginRequest(
            device_id=reply.device_id,
            nonce=challenge.nonce,
            signature=key.sign(login_statement(reply.device_id, challenge.nonce)).signature,
        ),
        timeout=CALL_TIMEOUT_S,
    )
    return Device(account, key, reply.device_id, tokens.access_token, tokens.refresh_token)


def _publish_keys(channel: grpc.Channel, device: Device) -> None:
    def signed(kind: int, kid: int, size: int) -> common_pb2.SignedPrekey:
        public = secrets.token_bytes(size)
        return common_pb2.SignedPrekey(key_id=kid, public_key=public, signature=device.key.sign(prekey_statement(kind, kid, public)).signature)

    keys_pb2_grpc.KeysStub(channel).UploadPrekeys(
        keys_pb2.UploadPrekeysRequest(
            signed_prekey=signed(1, 1, 32),
            one_time_prekeys=[common_pb2.OneTimePrekey(key_id=i, public_key=secrets.token_bytes(32)) for i in range(1, 6)],
            pq_one_time_prekeys=[signed(2, i, 1184) for i in range(1, 3)],
            pq_last_resort_prekey=signed(3, 100, 1184),
        ),
        metadata=device.md,
        timeout=CALL_TIMEOUT_S,
    )


@dataclass
class Target:
    mesh: LocalMesh
    channel: grpc.Channel
    fuzzer: Device  # the caller of authenticated examples
    victim: Device  # another account, whose ids the examples aim at


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with LocalMesh(tmp_path_factory.mktemp("fuzzmesh"), regions=("solo",), replicas=1, extra_env=LIMITS) as mesh:
        channel = grpc.insecure_channel(mesh.regions["solo"].endpoint)
        try:
            victim = _register(channel)
            _publish_keys(channel, victim)
            yield Target(mesh, channel, _register(channel), victim)
        finally:
            channel.close()


# -- requests drawn from descriptors ------------------------------------------------------------

U64_EDGES = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]


def _strings(pool: list[str]) -> st.SearchStrategy[str]:
    # Half the draws are ids and accounts that exist (or could): those reach the store.
    return st.one_of(
        st.sampled_from(pool),
        st.sampled_from(pool),
        st.sampled_from(pool),
        st.sampled_from(pool),
        st.text(max_size=80),
        st.text(alphabet="0123456789abcdef", min_size=31, max_size=33),
        st.from_regex(r"[a-z0-9][a-z0-9._-]{0,40}\n?", fullmatch=True),
        st.sampled_from(["", "*", ">", "a.b", "..", "abc\n", "x" * 5000, "\x00" * 32]),
    )


_BYTES = st.one_of(
    st.binary(max_size=80),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
    st.binary(min_size=1184, max_size=1184),
    st.just(b"\x00" * (128 * 1024 + 1)),
)


def _scalar(field: pb_descriptor.FieldDescriptor, pool: list[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FIELD.TYPE_STRING:
        return _strings(pool)
    if kind == FIELD.TYPE_BYTES:
        return _BYTES
    if kind == FIELD.TYPE_BOOL:
        return st.booleans()
    if kind in (FIELD.TYPE_UINT32, FIELD.TYPE_FIXED32):
        return st.sampled_from([e for e in U64_EDGES if e < 2**32]) | st.integers(0, 2**32 - 1)
    if kind in (FIELD.TYPE_UINT64, FIELD.TYPE_FIXED64):
        return st.sampled_from(U64_EDGES) | st.integers(0, 2**64 - 1) | st.integers(0, 200)
    if kind in (FIELD.TYPE_INT64, FIELD.TYPE_SINT64, FIELD.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if kind in (FIELD.TYPE_INT32, FIELD.TYPE_SINT32, FIELD.TYPE_SFIXED32, FIELD.TYPE_ENUM):
        return st.integers(-(2**31), 2**31 - 1)
    raise AssertionError(f"no strategy for field {field.full_name} of type {kind}")


def messages(descriptor: pb_descriptor.Descriptor, pool: list[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Valid messages of ``descriptor``: any subset of fields set, each to a value of its type."""
    cls = GetMessageClass(descriptor)
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FIELD.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value = messages(field.message_type, pool, depth + 1)
        else:
            value = _scalar(field, pool)
        if not field.is_repeated:
            optional[field.name] = value
        elif field.type == FIELD.TYPE_MESSAGE:
            optional[field.name] = st.lists(value, max_size=4)
        else:  # one past the services' list bounds (1000 acks) too
            optional[field.name] = st.lists(value, max_size=6) | st.lists(value, min_size=1001, max_size=1002)
    return st.fixed_dictionaries({}, optional=optional).map(lambda fields: cls(**fields))


def _meaningful(method: pb_descriptor.MethodDescriptor, target: Target) -> st.SearchStrategy[Any] | None:
    """Requests that pass validation (correctly signed, real ids), so the servicers' deeper paths run too."""
    fuzzer, victim = target.fuzzer, target.victim
    name = method.name
    if name in ("Register", "AddDevice"):

        def signed(account: str, seed: bytes) -> Any:
            key = nacl.signing.SigningKey(seed)
            ik = bytes(key.verify_key)
            sig = key.sign(register_statement(account, ik)).signature
            if name == "AddDevice":
                return auth_pb2.AddDeviceRequest(identity_key=ik, signature=sig)
            return auth_pb2.RegisterRequest(account=account, identity_key=ik, signature=sig)

        account = st.from_regex(r"[a-z0-9]{3,12}", fullmatch=True) | st.sampled_from([fuzzer.account, victim.account])
        return st.builds(signed, st.just(fuzzer.account) if name == "AddDevice" else account, st.binary(min_size=32, max_size=32))
    if name in ("Send", "SendStream"):
        send = st.builds(
            relay_pb2.SendRequest,
            recipient_device_id=st.sampled_from([victim.device_id, fuzzer.device_id, "f" * 32]),
            message_id=st.binary(min_size=16, max_size=16) | st.just(b"\x01" * 16),
            ciphertext=st.binary(min_size=1, max_size=200) | st.just(b"\x00" * (128 * 1024)),
        )
        if name == "Send":
            return send
        return st.builds(relay_pb2.SendBatch, envelopes=st.lists(send, min_size=1, max_size=5))
    if name == "UploadPrekeys":
        key = fuzzer.key

        def signed_key(kind: int, size: int, kid: int, public: bytes) -> Any:
            return common_pb2.SignedPrekey(key_id=kid, public_key=public[:size].ljust(size, b"\x00"),
                                           signature=key.sign(prekey_statement(kind, kid, public[:size].ljust(size, b"\x00"))).signature)

        ids = st.integers(0, 2**32 - 1) | st.integers(0, 20)
        return st.builds(
            keys_pb2.UploadPrekeysRequest,
            signed_prekey=st.builds(signed_key, st.just(1), st.just(32), ids, st.binary(min_size=32, max_size=32)),
            one_time_prekeys=st.lists(st.builds(common_pb2.OneTimePrekey, key_id=ids, public_key=st.binary(min_size=32, max_size=32)), max_size=5),
            pq_one_time_prekeys=st.lists(st.builds(signed_key, st.just(2), st.just(1184), ids, st.binary(min_size=1184, max_size=1184)), max_size=2),
            pq_last_resort_prekey=st.builds(signed_key, st.sampled_from([3, 2]), st.just(1184), ids, st.binary(min_size=1184, max_size=1184)),
        )
    if name == "Login":

        def login(genuine: bool, seed: bytes) -> Any:
            nonce = auth_pb2_grpc.AuthStub(target.channel).Challenge(
                auth_pb2.ChallengeRequest(device_id=fuzzer.device_id), timeout=CALL_TIMEOUT_S
            ).nonce
            key = fuzzer.key if genuine else nacl.signing.SigningKey(seed)
            sig = key.sign(login_statement(fuzzer.device_id, nonce)).signature
            return auth_pb2.LoginRequest(device_id=fuzzer.device_id, nonce=nonce, signature=sig)

        return st.builds(login, st.booleans(), st.binary(min_size=32, max_size=32))
    if name == "Refresh":
        # The fuzzer's own refresh token: the first use succeeds, a reuse ends its family.
        return st.builds(auth_pb2.RefreshRequest, refresh_token=st.sampled_from([fuzzer.refresh, fuzzer.refresh + "x", fuzzer.token]))
    if name == "FetchBundles":
        return st.builds(
            keys_pb2.FetchBundlesRequest,
            account=st.sampled_from([victim.account, fuzzer.account, "nobody1"]),
            device_id=st.sampled_from(["", victim.device_id, fuzzer.device_id, "f" * 32]),
        )
    return None


def requests(method: pb_descriptor.MethodDescriptor, target: Target, pool: list[str]) -> st.SearchStrategy[bytes]:
    """One request's bytes: arbitrary, a valid message, a meaningful one, or a valid message with junk appended."""
    valid = messages(method.input_type, pool).map(lambda m: m.SerializeToString())
    choices = [
        valid,
        valid,
        st.binary(max_size=300),
        st.tuples(valid, st.binary(min_size=1, max_size=20)).map(lambda t: t[0] + t[1]),
    ]
    meaningful = _meaningful(method, target)
    if meaningful is not None:
        choices += [meaningful.map(lambda m: m.SerializeToString())] * 3
    return st.one_of(*choices)


CALLERS = ["device", "anonymous", "junk-token", "empty-bearer", "huge-token", "nested-claims"]
# Most examples come from a registered device: the others stop at the edge.
callers = st.one_of(st.just("device"), st.just("device"), st.sampled_from(CALLERS))


def _metadata(caller: str, fuzzer: Device) -> tuple[tuple[str, str], ...]:
    if caller == "device":
        return fuzzer.md
    if caller == "anonymous":
        return ()
    if caller == "empty-bearer":
        return (("authorization", "Bearer "),)
    if caller == "huge-token":
        return (("authorization", "Bearer v1." + "A" * (MAX_TOKEN_CHARS * 4)),)
    if caller == "nested-claims":
        import base64

        claims = base64.urlsafe_b64encode(b"[" * 760).rstrip(b"=").decode()
        return (("authorization", f"Bearer v1.{claims}."),)
    return (("authorization", "Bearer v1.not.a-token"),)


# -- one call, whatever its shape ----------------------------------------------------------------


def _call(target: Target, path: str, method: pb_descriptor.MethodDescriptor, frames: list[bytes], md: Any) -> tuple[grpc.StatusCode, str]:
    """Sends ``frames`` (one for a unary request) and returns the final status and its message."""
    channel = target.channel
    if not method.client_streaming and not method.server_streaming:
        rpc = channel.unary_unary(path)
        try:
            rpc(frames[0], metadata=md, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""
    assert method.server_streaming, f"{path}: a new streaming shape to cover"
    decode = GetMessageClass(method.output_type).FromString
    if method.client_streaming:
        call = channel.stream_stream(path, response_deserializer=decode)(iter(frames), metadata=md, timeout=CALL_TIMEOUT_S)
    else:  # one request, a stream of answers (SyncStream, Attachments.Download)
        call = channel.unary_stream(path, response_deserializer=decode)(frames[0], metadata=md, timeout=CALL_TIMEOUT_S)
    try:
        for response in call:
            # Sync stays open after its backlog: the answer so far is the status.
            if getattr(response, "HasField", None) and "backlog_done" in type(response).DESCRIPTOR.fields_by_name:
                if response.HasField("backlog_done"):
                    call.cancel()
                    return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details()  # type: ignore[attr-defined]
    return call.code(), call.details()


def _pool(target: Target) -> list[str]:
    return [target.fuzzer.device_id, target.victim.device_id, target.fuzzer.account, target.victim.account, "f" * 32, "nobody1"]


def _log_tracebacks(mesh: LocalMesh) -> list[str]:
    found = []
    for log in sorted((mesh.workdir / "logs").glob("*.log")):
        if log.name.startswith("nats-"):
            continue
        text = log.read_text(errors="replace")
        if "Traceback" in text or "unexpected error" in text:
            found.append(f"{log.name}:\n{text[-3000:]}")
    return found


def _healthy(target: Target) -> None:
    """Another pair of users can still send and receive, end to end through the services."""
    alice, bob = _register(target.channel), _register(target.channel)
    mid = secrets.token_bytes(16)
    relay_pb2_grpc.RelayStub(target.channel).Send(
        relay_pb2.SendRequest(recipient_device_id=bob.device_id, message_id=mid, ciphertext=b"still here"),
        metadata=alice.md,
        timeout=CALL_TIMEOUT_S,
    )
    call = mailbox_pb2_grpc.MailboxStub(target.channel).Sync(iter([mailbox_pb2.SyncRequest()]), metadata=bob.md, timeout=CALL_TIMEOUT_S)
    got: list[bytes] = []
    for response in call:
        got.extend(e.message_id for e in response.envelopes)
        if response.HasField("backlog_done"):
            break
    call.cancel()
    assert got == [mid], "the mesh no longer delivers after the fuzzing"


@pytest.mark.parametrize(("path", "method"), METHODS, ids=[p.rsplit(".", 1)[-1] for p, _ in METHODS])
def test_any_request_to_any_rpc_gets_a_documented_status(target: Target, path: str, method: pb_descriptor.MethodDescriptor) -> None:
    pool = _pool(target)
    if method.name == "RevokeDevice":
        # Revoking the fuzzer itself would turn every later example into UNAUTHENTICATED.
        pool = [p for p in pool if p != target.fuzzer.device_id]
    seen: dict[grpc.StatusCode, int] = {}
    streaming = method.client_streaming

    @FUZZ
    @given(
        callers,
        st.lists(requests(method, target, pool), min_size=1 if not streaming else 0, max_size=3 if streaming else 1),
    )
    def check(caller: str, frames: list[bytes]) -> None:
        code, detail = _call(target, path, method, frames, _metadata(caller, target.fuzzer))
        for _ in range(TRANSIENT_RETRIES):
            if code not in TRANSIENT:
                break
            # A store that answered late on a loaded machine is not the request's doing: the same
            # request again must get a documented answer (a request that breaks a servicer keeps
            # breaking it, and hypothesis would otherwise report a flaky failure).
            seen[code] = seen.get(code, 0) + 1
            time.sleep(TRANSIENT_PAUSE_S)
            code, detail = _call(target, path, method, frames, _metadata(caller, target.fuzzer))
        seen[code] = seen.get(code, 0) + 1
        assert code in DOCUMENTED, f"{path} answered {code.name} ({detail!r}) to {caller} sending {[f[:80] for f in frames]!r}"

    check()
    print(path, {c.name: n for c, n in seen.items()})  # shown with -s: how deep the examples went
    assert not _log_tracebacks(target.mesh), _log_tracebacks(target.mesh)
    _healthy(target)
    # The fuzzing went past the edge: something other than a refusal of the caller came back.
    assert set(seen) - {grpc.StatusCode.UNAUTHENTICATED}, f"{path}: every example was refused at the edge: {seen}"
