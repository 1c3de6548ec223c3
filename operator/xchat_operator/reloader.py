"""The NATS config reloader: a sidecar that applies reloadable config changes without a restart.

nats-server re-reads its config on SIGHUP and applies what it can in place
(users, passwords, permissions, routes, TLS files: ``natsconfig.RELOADABLE``).
The operator only writes the config Secret; the kubelet refreshes the mounted
files (within about a minute), and this sidecar, watching them, sends SIGHUP to
the server. The NATS pods carry the hash of the restart-relevant part of the
config only (``natsconfig.restart_fingerprint``), so such a change never rolls
the StatefulSet: a password rotation or a region added to the route list keeps
every server, and every JetStream replica, up.

Why a sidecar: the operator signalling the server would need ``pods/exec``
(``nats-server --signal reload`` inside the pod) or a NATS system-account user,
both far more than this needs. The sidecar has no API access and no
capability: it runs the NATS image's own shell as the server's user, in the
pod's shared process namespace (``shareProcessNamespace``), and reads the PID
from the file the server writes to the pod's ``pid`` emptyDir. Bounded: one
``cat | md5sum`` of a few kilobytes every ``POLL_SECONDS``, 16 MiB of memory.
"""

from __future__ import annotations

from typing import Any

CONTAINER_NAME = "config-reloader"
POLL_SECONDS = 5

# POSIX sh + md5sum + kill: busybox in xchat-nats, the same in the alpine nats images.
# The checksum covers the config and the TLS files (a rotated certificate is reloaded too).
WATCH_SCRIPT = r"""set -u
config_dir="$1"; tls_dir="$2"; pid_file="$3"; period="$4"
checksum() { cat "$config_dir"/*.conf "$tls_dir"/* 2>/dev/null | md5sum; }
seen=$(checksum)
while sleep "$period"; do
  now=$(checksum)
  [ "$now" = "$seen" ] && continue
  if pid=$(cat "$pid_file" 2>/dev/null) && kill -HUP "$pid"; then
    echo "config-reloader: config changed, reload signalled to nats-server (pid $pid)"
    seen=$now
  else
    echo "config-reloader: config changed, nats-server not running yet; retrying"
  fi
done
"""


def watch_argv(config_dir: str, tls_dir: str, pid_file: str, period: int = POLL_SECONDS) -> list[str]:
    """The sidecar's command: the watch script with its four arguments."""
    return ["sh", "-c", WATCH_SCRIPT, "config-reloader", config_dir, tls_dir, pid_file, str(period)]


def container(
    *, image: str, pull_policy: str, mounts: list[Any], config_dir: str, tls_dir: str, pid_file: str,
    security: dict[str, Any],
) -> dict[str, Any]:
    """The sidecar container of a NATS pod (same image and user as the server, read-only mounts)."""
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": watch_argv(config_dir, tls_dir, pid_file),
        "volumeMounts": [{**m, "readOnly": True} if m["name"] != "pid" else dict(m) for m in mounts if m["name"] != "data"],
        "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "16Mi"}},
        "securityContext": dict(security),
    }
