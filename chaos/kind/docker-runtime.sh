#!/usr/bin/env bash
# Make `docker run --privileged` work on a host whose capability bounding set is
# smaller than "all capabilities" (this machine: no CAP_SYS_RESOURCE), which kind
# needs for every node container. Installs chaos/kind/runc-dropcaps as
# /usr/local/lib/xchat/runc-dropcaps, registers it in /etc/docker/daemon.json as
# runtime "xchat-runc" and makes it dockerd's default runtime, then restarts
# dockerd if the configuration changed. Idempotent; does nothing when the
# bounding set is complete. The previous daemon.json is kept as
# /etc/docker/daemon.json.xchat-orig.
#
# Usage: chaos/kind/docker-runtime.sh [install|uninstall|check]   (default: install)
#   uninstall  restores the previous daemon.json and restarts dockerd
#   check      exit 0 if `docker run --privileged` works
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WRAPPER=/usr/local/lib/xchat/runc-dropcaps
CONF=/etc/docker/daemon.json
ORIG="$CONF.xchat-orig"
RUNTIME=xchat-runc
LOG="${XCHAT_DOCKERD_LOG:-/var/log/xchat-dockerd.log}"
log() { printf '[docker-runtime] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Any local image with /bin/true, run as root (a non-root user gets no capabilities to drop).
probe_image() {
  local i
  for i in xchat.local/debian-python:bookworm xchat.local/debian-node-base:bookworm $(docker images --format '{{.Repository}}:{{.Tag}}' | grep -v '<none>'); do
    docker image inspect "$i" >/dev/null 2>&1 && { echo "$i"; return; }
  done
}

check() {
  local img; img="$(probe_image)"; [[ -n "$img" ]] || die "no local image to probe with"
  docker run --rm --privileged --user 0 --entrypoint /bin/true "$img" >/dev/null 2>&1 || return 1
  # and `docker exec --privileged` (kind execs into its nodes that way)
  local id ok=0; id="$(docker run -d --rm --user 0 --entrypoint /bin/sleep "$img" 60)" || return 1
  docker exec --privileged "$id" /bin/true >/dev/null 2>&1 || ok=1
  docker rm -f "$id" >/dev/null 2>&1 || true
  return "$ok"
}

restart_dockerd() {
  local pid
  if [[ -f /var/run/docker.pid ]] && pid="$(cat /var/run/docker.pid)" && kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && die "dockerd (pid $pid) did not stop"
  fi
  log "starting dockerd (log: $LOG)"
  nohup dockerd >>"$LOG" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  die "dockerd did not start; see $LOG"
}

full_bounding_set() { # every capability up to CAP_LAST_CAP present?
  local bnd last; bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  last="$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo 40)"
  (( bnd == (1 << (last + 1)) - 1 ))
}

do_install() {
  if full_bounding_set; then log "capability bounding set is complete: nothing to do"; return; fi
  command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
  mkdir -p "$(dirname "$WRAPPER")" /etc/docker
  if ! cmp -s "$HERE/runc-dropcaps" "$WRAPPER"; then
    install -m 755 "$HERE/runc-dropcaps" "$WRAPPER"; log "installed $WRAPPER"
  fi
  local cur='{}'; [[ -s "$CONF" ]] && cur="$(cat "$CONF")"
  [[ -e "$ORIG" ]] || { if [[ -e "$CONF" ]]; then cp -p "$CONF" "$ORIG"; else echo '{}' >"$ORIG"; fi; }
  local want
  want="$(jq --arg rt "$RUNTIME" --arg path "$WRAPPER" \
    '.runtimes[$rt] = {path: $path} | ."default-runtime" = $rt' <<<"$cur")"
  if [[ "$(jq -S . <<<"$cur")" != "$(jq -S . <<<"$want")" ]]; then
    printf '%s\n' "$want" >"$CONF"; log "wrote $CONF (default runtime $RUNTIME)"
    restart_dockerd
  elif ! docker info >/dev/null 2>&1; then
    restart_dockerd
  fi
  docker info --format '{{.DefaultRuntime}}' | grep -qx "$RUNTIME" || restart_dockerd
  check || die "docker run --privileged still fails with runtime $RUNTIME; see $LOG"
  log "docker run --privileged works (default runtime $RUNTIME)"
}

do_uninstall() {
  [[ -e "$ORIG" ]] || { log "nothing to restore ($ORIG missing)"; return; }
  if [[ "$(jq -S . "$ORIG")" == "{}" ]]; then rm -f "$CONF"; else cp -p "$ORIG" "$CONF"; fi
  rm -f "$ORIG"; log "restored $CONF"
  restart_dockerd
}

case "${1:-install}" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  check) if check; then log "docker run --privileged works"; else log "docker run --privileged fails"; exit 1; fi ;;
  *) die "usage: $0 [install|uninstall|check]" ;;
esac
