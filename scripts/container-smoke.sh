#!/usr/bin/env bash
# Build the container image with podman and prove it works: run it against the Room emulator on this machine,
# scrape /metrics from the running container and require `trueconf_up 1`. Not part of CI (it needs root, podman
# and a few minutes); run it by hand or with `make container-smoke`.
#
#   scripts/container-smoke.sh                  # make the base image if missing, build, run, check, clean up
#   BASE_IMAGE=python:3.11.13-slim-bookworm scripts/container-smoke.sh   # where that image can be pulled
#   KEEP=1 scripts/container-smoke.sh           # keep the built image too (the base image is always kept)
#
# Environment:
#   BASE_IMAGE   base for both build stages (default localhost/trueconf-exporter-base:bookworm, made here with
#                debootstrap if it does not exist yet: public container registries may be out of reach)
#   IMAGE        tag of the built image (default localhost/trueconf-exporter:smoke)
#   MIRROR       Debian mirror for debootstrap (default: the first one in this machine's apt sources)
#   PYTHON       Python with the exporter installed, to run the emulator (default .venv/bin/python)
#   BUILD_CA_BUNDLE  CA bundle pip in the build must trust, behind a TLS-intercepting proxy (default: $PIP_CERT)
#
# Podman runs here with the adjustments these machines need: a containers.conf with no default ulimits,
# `build --isolation chroot`, `--runtime runc`. The container uses the host network so that it reaches the
# emulator on 127.0.0.1 and nothing leaves the loopback interface.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-localhost/trueconf-exporter-base:bookworm}
IMAGE=${IMAGE:-localhost/trueconf-exporter:smoke}
PYTHON=${PYTHON:-.venv/bin/python}
SUITE=bookworm
started=$(date +%s)

say() { printf '[container-smoke %3ss] %s\n' "$(($(date +%s) - started))" "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

command -v podman >/dev/null || die "podman is missing: apt-get install -y podman runc"
command -v runc >/dev/null || die "runc is missing: apt-get install -y runc"
[ -x "$PYTHON" ] || die "$PYTHON not found: run 'make test' (or 'make .venv/bin/.installed') first, or set PYTHON"

work=$(mktemp -d)
containers=()
emulator_pid=""
cleanup() {
  status=$?
  for container in "${containers[@]}"; do
    if [ "$status" != 0 ]; then
      say "log of container ${container:0:12}:"; podman --runtime runc logs "$container" 2>&1 | tail -n 30 >&2 || true
    fi
    podman --runtime runc rm -f "$container" >/dev/null 2>&1 || true
  done
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null && wait "$emulator_pid" 2>/dev/null
  if [ "${KEEP:-0}" != 1 ] && [ -n "${built:-}" ]; then podman rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# The one adjustment podman needs on these machines.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"

# ---- the base image: any Debian-like image with python3 and its venv module ----
if podman image exists "$BASE_IMAGE"; then
  say "base image $BASE_IMAGE is there"
elif [[ "$BASE_IMAGE" == localhost/* ]]; then
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
  [ "$(id -u)" = 0 ] || die "making the base image with debootstrap needs root"
  MIRROR=${MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
            | awk '{print $2}' | head -n 1 || true)}
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  say "making base image $BASE_IMAGE: debootstrap $SUITE from $MIRROR (a few minutes)"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs" "$MIRROR" \
    > "$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$BASE_IMAGE" >/dev/null
  say "base image made: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes"
else
  say "pulling $BASE_IMAGE"
  podman pull "$BASE_IMAGE" >/dev/null || die "cannot pull $BASE_IMAGE; leave BASE_IMAGE unset to make one locally"
fi

# ---- the image ----
say "building $IMAGE from $BASE_IMAGE"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=$(git remote get-url origin 2>/dev/null || echo unknown)
version=$("$PYTHON" -c 'import exporter; print(exporter.__version__)')
# Where PyPI is reached through a TLS-intercepting proxy, pip in the builder must trust that proxy's CA. Mount
# the host's bundle and a pip.conf naming it for the build's RUN steps only: nothing of it ends up in the image.
build_volumes=()
ca_bundle=${BUILD_CA_BUNDLE:-${PIP_CERT:-}}
if [ -n "$ca_bundle" ] && [ -f "$ca_bundle" ]; then
  printf '[global]\ncert = /run/build-ca.crt\n' > "$work/pip.conf"
  build_volumes=(--volume "$ca_bundle:/run/build-ca.crt:ro" --volume "$work/pip.conf:/etc/pip.conf:ro")
  say "pip in the build trusts $ca_bundle"
fi
podman build --isolation chroot --format docker --pull=never --layers=false "${build_volumes[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg SOURCE="$source_url" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$IMAGE" . > "$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; die "podman build failed"; }
built=1
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "${user%%:*}" != 0 ] && [ -n "$user" ] || die "image runs as root (User='$user')"
podman image inspect --format '{{index .Config.Labels "org.opencontainers.image.title"}}' "$IMAGE" \
  | grep -qx trueconf-exporter || die "OCI title label missing"
podman run --rm --runtime runc --entrypoint /bin/sh "$IMAGE" -c \
  '! command -v gcc && ! command -v cc && ! command -v make && ! command -v curl && ! /opt/trueconf-exporter/bin/python -m pip --version' \
  >/dev/null 2>&1 || die "the final image has a compiler, make, curl or pip in its venv"
say "image built: user $user, $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes, no compiler/make/curl, no pip in the venv"

# ---- the emulator on the host ----
# The Room wants a PIN; the container gets it as a read-only file, the way a secret is mounted.
"$PYTHON" -c 'import secrets; print(secrets.randbelow(10**6))' > "$work/pin"
chmod 0444 "$work/pin"
"$PYTHON" -m exporter emulate --host 127.0.0.1 --port 0 --web-port 0 --pin-file "$work/pin" \
  > "$work/emulator.out" 2>&1 &
emulator_pid=$!
for _ in $(seq 100); do grep -q 'emulator ready' "$work/emulator.out" && break; sleep 0.1; done
ws=$(grep -oE 'ws://[0-9.]+:[0-9]+' "$work/emulator.out" | head -n 1) || true
[ -n "$ws" ] || { cat "$work/emulator.out" >&2; die "the emulator did not start"; }
say "emulator at $ws"

# ---- the container: read-only, no capabilities, unprivileged, host loopback, the PIN as a file ----
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run_exporter PORT [podman run options...]: start the image; prints the container id
run_exporter() {
  local port=$1; shift
  # Without systemd as PID 1, podman cannot schedule the HEALTHCHECK and complains on stderr (harmless, kept
  # in $work/podman.err); the check is run once by hand below instead.
  podman --runtime runc run -d --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
    --volume "$work/pin:/run/secrets/trueconf-pin:ro" \
    -e TRUECONF_EXPORTER_WEB_LISTEN_ADDRESS="127.0.0.1:$port" "$@" "$IMAGE" \
    2>> "$work/podman.err" || { cat "$work/podman.err" >&2; die "podman run failed"; }
}

# scrape URL: the body, retrying while the container starts
scrape() {
  local body=""
  for _ in $(seq 100); do
    body=$("$PYTHON" -c 'import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())' \
      "$1" 2>/dev/null) && break
    sleep 0.2
  done
  [ -n "$body" ] || die "no answer on $1"
  printf '%s\n' "$body"
}

# stop_exporter ID: SIGTERM must end it with status 0
stop_exporter() {
  podman --runtime runc stop -t 10 "$1" >/dev/null 2>> "$work/podman.err"
  local code
  code=$(podman --runtime runc inspect --format '{{.State.ExitCode}}' "$1")
  [ "$code" = 0 ] || die "the exporter exited $code on SIGTERM"
}

# Single target: the Room from TRUECONF_EXPORTER_TARGET, collected at every scrape of /metrics.
port=$(free_port)
container=$(run_exporter "$port" -e TRUECONF_EXPORTER_TARGET="$ws" \
  -e TRUECONF_EXPORTER_PIN_FILE=/run/secrets/trueconf-pin)
containers+=("$container")
say "single-target container ${container:0:12} on 127.0.0.1:$port"
metrics=$(scrape "http://127.0.0.1:$port/metrics")
grep -E '^trueconf_' <<<"$metrics" | head -n 8 >&2
grep -qxE 'trueconf_up(\{[^}]*\})? 1(\.0)?' <<<"$metrics" || die "trueconf_up is not 1"
say "scraped /metrics from the container: trueconf_up 1 (authenticated with the PIN file)"

podman --runtime runc healthcheck run "$container" >/dev/null 2>&1 \
  || die "the image's HEALTHCHECK failed"
say "HEALTHCHECK (stdlib urllib on /healthz) passed"
stop_exporter "$container"
say "stopped cleanly on SIGTERM"

# Multi-target, as in deploy/kubernetes: a config file with a module whose pin_file is the mounted secret and
# an allow-list; Prometheus would ask /probe?target=...&module=default.
cat > "$work/config.yml" <<'YAML'
modules:
  default:
    pin_file: /run/secrets/trueconf-pin
    timeout: 5s
allowed_targets:
  - "127.0.0.1"
YAML
chmod 0444 "$work/config.yml"
port=$(free_port)
container=$(run_exporter "$port" --volume "$work/config.yml:/etc/trueconf-exporter/config.yml:ro" \
  -e TRUECONF_EXPORTER_CONFIG_FILE=/etc/trueconf-exporter/config.yml)
containers+=("$container")
say "multi-target container ${container:0:12} on 127.0.0.1:$port"
target=${ws#ws://}
probed=$(scrape "http://127.0.0.1:$port/probe?target=$target&module=default")
grep -qxE 'trueconf_up(\{[^}]*\})? 1(\.0)?' <<<"$probed" || { echo "$probed" >&2; die "/probe: trueconf_up is not 1"; }
say "scraped /probe?target=$target&module=default from the container: trueconf_up 1"
stop_exporter "$container"
say "PASS"
