#!/usr/bin/env bash
# Build the image from docker/Dockerfile; check that without API keys it refuses clients off its
# loopback (protected mode); run it with a named volume and an admin key, drive it over HTTP
# (create, train, save, restart the container, restore, infer) and check that the device's
# checkpoint survived the restart; then remove the containers, volume and image it made.
#
#   bash docker/test.sh
#   bash docker/test.sh --cluster   the sharded fleet instead: the image built with EXTRAS=cluster (Ray),
#                                   then docker/compose.cluster.yaml run by Compose (a Ray head, two
#                                   worker containers and the API on one volume); train and save, resize
#                                   2 -> 3 -> 2, restart the worker whose shard owns the device, restore
#
# Where no Docker engine answers (as on CI's machines) it needs root: it installs Debian's
# docker.io with apt-get and starts its own dockerd, with its state in a temporary directory,
# and stops it again at the end; for --cluster, Debian's docker-compose too where the engine has no
# compose plugin. Where the base image cannot be pulled (no registry), it makes
# a stand-in python:3.11-slim with debootstrap, so that the Dockerfile builds unchanged.
#
# Environment:
#   FLEET_DOCKER_ROOT=DIR   the started dockerd keeps its state (base image, build cache) in DIR,
#                           kept across runs; by default it is a temporary directory, removed.
#   PIP_CERT / SSL_CERT_FILE  the CA bundle handed to pip in the build as the secret "pipcert"
#                           (default: /etc/ssl/certs/ca-certificates.crt where it exists).
set -Eeuo pipefail
CLUSTER=""
case "${1:-}" in
"") ;;
--cluster) CLUSTER=1 ;;
*)
    echo "usage: bash docker/test.sh [--cluster]" >&2
    exit 2
    ;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE_IMAGE=python:3.11-slim
RUN_ID="fleet-test-$(date +%s)-$$"
IMAGE="tflite-fleet-test:$RUN_ID"
CONTAINER="$RUN_ID"
VOLUME="$RUN_ID-data"
WORK=$(mktemp -d /tmp/fleet-docker-test.XXXXXX)
PY=$(command -v python3 || true)
DOCKER=""
DOCKERD_PID=""
MADE_CONTAINER="" MADE_VOLUME="" MADE_IMAGE="" MADE_BASE="" PROTECTED_CONTAINER=""
COMPOSE=() MADE_COMPOSE=""
APT_UPDATED="" HAD_DOCKER0="" IP_FORWARD=""
STARTED=$SECONDS

step() { printf '\n==> [%4ds] %s\n' $((SECONDS - STARTED)) "$*"; }
info() { printf '    %s\n' "$*"; }
fail() {
    printf '\nFAILED: %s\n' "$*" >&2
    exit 1
}
docker() { "$DOCKER" "$@"; }

stop_dockerd() {
    [ -n "$DOCKERD_PID" ] || return 0
    info "stopping dockerd (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        info "dockerd did not stop in 20 s: killing it"
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    # The containerd that dockerd started for itself, if it outlived it.
    local containerd_pid
    containerd_pid=$(cat "$WORK/exec/containerd/containerd.pid" 2>/dev/null || true)
    if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
        kill -TERM "$containerd_pid" 2>/dev/null || true
        sleep 2
    fi
    DOCKERD_PID=""
}

# What a started dockerd changes on the host and does not undo when it stops: the docker0 bridge,
# its iptables chains and rules (and the FORWARD policy, set to DROP), and IPv4 forwarding.
snapshot_host_network() {
    ip link show docker0 >/dev/null 2>&1 && HAD_DOCKER0=1
    IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || true)
    local table
    for table in filter nat; do
        iptables-save -t "$table" >"$WORK/iptables.$table" 2>/dev/null || true
    done
}

restore_host_network() {
    [ -f "$WORK/iptables.filter" ] || return 0
    if [ -z "$HAD_DOCKER0" ] && ip link show docker0 >/dev/null 2>&1; then
        ip link delete docker0 && info "removed the docker0 bridge"
    fi
    local table
    for table in filter nat; do
        if ! [ -s "$WORK/iptables.$table" ]; then # the table was empty: leave it empty, all policies ACCEPT
            case $table in
            filter) printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' ;;
            nat) printf '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n' ;;
            esac >"$WORK/iptables.$table"
        fi
        iptables-restore <"$WORK/iptables.$table" || info "could not restore the iptables $table table"
    done
    info "restored the iptables filter and nat tables"
    if [ -n "$IP_FORWARD" ] && [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$IP_FORWARD" ]; then
        echo "$IP_FORWARD" >/proc/sys/net/ipv4/ip_forward && info "restored net.ipv4.ip_forward=$IP_FORWARD"
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    step "cleaning up"
    if [ -n "$MADE_CONTAINER" ]; then
        if [ "$rc" -ne 0 ]; then
            echo "--- the container's last log lines"
            docker logs --tail 40 "$CONTAINER" 2>&1 | sed 's/^/    /'
        fi
        docker rm -f "$CONTAINER" >/dev/null && info "removed container $CONTAINER"
    fi
    if [ -n "$MADE_COMPOSE" ]; then
        [ "$rc" -eq 0 ] || { echo "--- the cluster's last log lines"; compose logs --tail=15 2>&1 | sed 's/^/    /'; }
        compose down -v --remove-orphans >/dev/null 2>&1 && info "compose down: removed $RUN_ID's containers and volume"
    fi
    [ -n "$PROTECTED_CONTAINER" ] && docker rm -f "$PROTECTED_CONTAINER" >/dev/null && info "removed $PROTECTED_CONTAINER"
    [ -n "$MADE_VOLUME" ] && docker volume rm "$VOLUME" >/dev/null && info "removed volume $VOLUME"
    [ -n "$MADE_IMAGE" ] && docker image rm "$IMAGE" >/dev/null 2>&1 && info "removed image $IMAGE"
    # A stand-in base image made in an engine this script did not start would pose as the real one there.
    [ -n "$MADE_BASE" ] && [ -z "$DOCKERD_PID" ] && docker image rm "$BASE_IMAGE" >/dev/null 2>&1 &&
        info "removed the stand-in $BASE_IMAGE"
    if [ -n "$DOCKERD_PID" ] && [ "$rc" -ne 0 ] && [ -s "$WORK/dockerd.log" ]; then
        echo "--- dockerd's last log lines"
        tail -n 15 "$WORK/dockerd.log" | sed 's/^/    /'
    fi
    if [ -n "$DOCKERD_PID" ]; then
        stop_dockerd
        restore_host_network
    fi
    # Mounts left under the work directory by an interrupted debootstrap or engine.
    findmnt -rn -o TARGET 2>/dev/null | grep -F "$WORK/" | sort -r | xargs -r umount -l 2>/dev/null
    rm -rf "$WORK" || info "could not remove $WORK completely"
    if [ "$rc" -eq 0 ]; then
        step "PASSED in $((SECONDS - STARTED)) s"
    else
        step "FAILED (exit $rc) after $((SECONDS - STARTED)) s"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

apt_install() {
    [ "$(id -u)" -eq 0 ] || fail "need root to install $* (or start a Docker engine first)"
    command -v apt-get >/dev/null || fail "no apt-get to install $*: start a Docker engine first"
    step "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq || fail "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >"$WORK/apt.log" 2>&1 ||
        { tail -n 30 "$WORK/apt.log"; fail "apt-get install $* failed"; }
}

engine_answers() { [ -n "$DOCKER" ] && timeout 20 "$DOCKER" info >/dev/null 2>&1; }

start_engine() {
    # Debian's client (/usr/bin/docker) has BuildKit; another docker on PATH may be a client without it.
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker || true); fi
    if engine_answers; then
        info "using the running engine ($("$DOCKER" version -f '{{.Server.Version}}' 2>/dev/null)) with $DOCKER"
        return
    fi
    local wanted=()
    command -v dockerd >/dev/null && [ -x /usr/bin/docker ] || wanted+=(docker.io)
    command -v iptables >/dev/null || wanted+=(iptables)
    [ ${#wanted[@]} -eq 0 ] || apt_install "${wanted[@]}"
    DOCKER=/usr/bin/docker
    local data_root=${FLEET_DOCKER_ROOT:-$WORK/engine}
    mkdir -p "$data_root" "$WORK/exec"
    step "starting dockerd (data root $data_root)"
    snapshot_host_network
    dockerd --data-root "$data_root" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
        --host "unix://$WORK/docker.sock" >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$WORK/docker.sock"
    for _ in $(seq 1 60); do
        engine_answers && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited: $(tail -n 5 "$WORK/dockerd.log")"
        sleep 0.5
    done
    engine_answers || fail "dockerd did not answer in 30 s"
    info "dockerd $(docker version -f '{{.Server.Version}}') answers (pid $DOCKERD_PID)"
}

debian_mirror() {
    # The Debian archive that the host's apt sources name (one-line or deb822 format).
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^ ]+/debian/?([[:space:]]|$)' | head -n 1 | tr -d '[:space:]')
    echo "${uri:-http://deb.debian.org/debian}"
}

make_standin_base() {
    command -v debootstrap >/dev/null || apt_install debootstrap
    local mirror rootfs="$WORK/rootfs"
    mirror=$(debian_mirror)
    step "making a stand-in $BASE_IMAGE with debootstrap (Debian bookworm's Python 3.11, from $mirror)"
    if ! timeout 900 debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log"
        fail "debootstrap failed"
    fi
    # As in the real image: python and pip on /usr/local/bin, and pip may install into the system Python.
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    MADE_BASE=1
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null || fail "docker import of the stand-in failed"
    rm -rf "$rootfs"
    info "stand-in $BASE_IMAGE made ($(docker run --rm "$BASE_IMAGE" python --version 2>&1))"
}

ensure_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        info "base image $BASE_IMAGE is present"
        return
    fi
    step "pulling $BASE_IMAGE"
    if timeout 120 "$DOCKER" pull -q "$BASE_IMAGE" >"$WORK/pull.log" 2>&1; then
        info "pulled $BASE_IMAGE"
        return
    fi
    info "cannot pull it: $(tail -n 1 "$WORK/pull.log")"
    make_standin_base
}

build_image() {
    step "building $IMAGE (docker/Dockerfile, context $ROOT)"
    local args=(build --progress=plain -f "$HERE/Dockerfile" -t "$IMAGE" --label "tflite-fleet-test=$RUN_ID")
    [ -z "$CLUSTER" ] || args+=(--build-arg EXTRAS=cluster)
    # The host's trust store (which holds an intercepting proxy's CA where there is one), for pip in the build.
    local cert=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    if [ -n "$cert" ] && [ -s "$cert" ]; then
        args+=(--secret "id=pipcert,src=$cert")
        info "CA bundle for pip inside the build: $cert (build secret pipcert)"
    fi
    local var
    for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        if [ -n "${!var:-}" ]; then args+=(--build-arg "$var"); fi
    done
    MADE_IMAGE=1
    local t0=$SECONDS
    if ! DOCKER_BUILDKIT=1 timeout 2400 "$DOCKER" "${args[@]}" "$ROOT" 2>&1 | tee "$WORK/build.log" |
        { grep --line-buffered -E '^#[0-9]+ \[|^#[0-9]+ ERROR|^ERROR|Downloading tensorflow-|Successfully (built|installed)' | cut -c1-160 | sed 's/^/    /' || true; }; then
        echo "--- the build's last lines"
        tail -n 40 "$WORK/build.log"
        fail "docker build failed"
    fi
    info "built in $((SECONDS - t0)) s; image size $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
}

check_image_config() {
    step "checking the image's configuration"
    local user volumes health
    user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
    volumes=$(docker image inspect -f '{{json .Config.Volumes}}' "$IMAGE")
    health=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
    info "user '$user', volumes $volumes, healthcheck $health"
    case "$user" in "" | 0 | 0:* | root | root:*) fail "the image runs as root" ;; esac
    [[ "$volumes" == *'"/data"'* ]] || fail "/data is not declared a volume"
    [[ "$health" == *'/healthz'* ]] || fail "the image has no healthcheck on /healthz"
}

wait_ready() {
    local deadline=$((SECONDS + ${1:-180}))
    while ((SECONDS < deadline)); do
        [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" = true ] ||
            fail "the container is not running ($(docker inspect -f '{{.State.Status}} exit {{.State.ExitCode}}' "$CONTAINER" 2>&1))"
        "$PY" "$HERE/drive.py" wait "$BASE_URL" 5 2>/dev/null && return 0
    done
    fail "the service did not become ready in ${1:-180} s"
}

run_container() {
    step "running $CONTAINER (volume $VOLUME at /data, 127.0.0.1:$PORT -> 8000)"
    MADE_VOLUME=1
    docker volume create "$VOLUME" >/dev/null
    MADE_CONTAINER=1
    # The image's healthcheck, probed every 2 s instead of 15 s so that the test need not wait.
    docker run -d --name "$CONTAINER" -p "127.0.0.1:$PORT:8000" -v "$VOLUME:/data" \
        -v "$WORK/api-keys.txt:/run/secrets/fleet-api-keys:ro" -e FLEET_API_KEYS_FILE=/run/secrets/fleet-api-keys \
        -v "$FASHION_MNIST:/datasets/fashion-mnist:ro" -e FLEET_FASHION_MNIST_DIR=/datasets/fashion-mnist \
        --health-interval 2s --stop-timeout 20 "$IMAGE" >/dev/null
}

# With no keys, the service answers only its own loopback: a client through the published port is
# refused, with a message that says how to configure keys; the healthcheck still passes.
check_protected_mode() {
    local name="$RUN_ID-protected" port
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    step "protected mode: the image without keys refuses clients off its loopback ($name)"
    PROTECTED_CONTAINER=$name
    docker run -d --name "$name" -p "127.0.0.1:$port:8000" "$IMAGE" >/dev/null
    "$PY" "$HERE/drive.py" wait "http://127.0.0.1:$port" 180 >/dev/null || fail "the keyless container did not start"
    "$PY" "$HERE/drive.py" protected "http://127.0.0.1:$port" || fail "protected mode"
    docker rm -f "$name" >/dev/null
    PROTECTED_CONTAINER=""
}

wait_healthy() {
    local status=""
    for _ in $(seq 1 60); do
        status=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")
        [ "$status" = healthy ] && break
        sleep 1
    done
    [ "$status" = healthy ] ||
        fail "healthcheck status '$status' after 60 s: $(docker inspect -f '{{json .State.Health.Log}}' "$CONTAINER" | tail -c 600)"
    info "healthcheck status: healthy"
}

# The sharded fleet: docker/compose.cluster.yaml itself, run by Compose (the engine's plugin, or
# Debian's docker-compose, installed where neither is there), with this run's image, keys and port.
find_compose() {
    if "$DOCKER" compose version >/dev/null 2>&1; then
        COMPOSE=("$DOCKER" compose)
    else
        command -v docker-compose >/dev/null || apt_install docker-compose
        COMPOSE=(docker-compose)
    fi
    info "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"
}
compose() {
    FLEET_IMAGE="$IMAGE" FLEET_PUBLISH="127.0.0.1:$PORT" FLEET_API_KEYS="$WORK/api-keys.txt" \
        "${COMPOSE[@]}" --project-name "$RUN_ID" -f "$HERE/compose.cluster.yaml" "$@"
}

run_cluster() {
    find_compose
    step "compose up: a Ray head, two workers and the API (docker/compose.cluster.yaml, project $RUN_ID)"
    MADE_COMPOSE=1
    compose up -d --no-build 2>&1 | sed 's/^/    /'
    CONTAINER=$(compose ps -q api)
    [ -n "$CONTAINER" ] || fail "compose started no api container"
}

cluster_flow() {
    run_cluster
    step "waiting for /healthz and /readyz (Ray's nodes, then two shards importing TensorFlow)"
    wait_ready 300
    "$PY" "$HERE/drive.py" shards "$BASE_URL" 2 || fail "the two shards"
    step "the dashboard and the API docs, served by the front from the image's files"
    "$PY" "$HERE/drive.py" pages "$BASE_URL" || fail "the pages"

    step "create a device, train it, save its checkpoint, record its logits"
    "$PY" "$HERE/drive.py" before "$BASE_URL" "$WORK/state.json" || fail "driving the sharded service"

    step "resize 2 -> 3 -> 2 while the device keeps its counters"
    "$PY" "$HERE/drive.py" resize "$BASE_URL" 3 || fail "resize to 3"
    "$PY" "$HERE/drive.py" shards "$BASE_URL" 3 || fail "three shards"
    "$PY" "$HERE/drive.py" resize "$BASE_URL" 2 || fail "resize to 2"

    local node
    node=$("$PY" "$HERE/drive.py" owner "$BASE_URL") || fail "finding the device's node"
    step "restarting the worker container of the device's shard ($node)"
    [ "${node#worker-}" != "$node" ] || fail "the device's shard runs on '$node', not on a worker"
    compose restart -t 10 "$node" 2>&1 | sed 's/^/    /'
    "$PY" "$HERE/drive.py" device "$BASE_URL" 180 || fail "the device's shard did not come back"
    "$PY" "$HERE/drive.py" shards "$BASE_URL" 2 || fail "two shards after the restart"

    step "the checkpoint survived: restore it, infer, compare with the logits recorded after save"
    "$PY" "$HERE/drive.py" after "$BASE_URL" "$WORK/state.json" || fail "driving the service after the restart"
}

# --- the run ---------------------------------------------------------------------------------------

[ -n "$PY" ] || fail "python3 is needed to drive the service"
[ -f "$HERE/Dockerfile" ] || fail "no $HERE/Dockerfile"
step "Docker engine"
start_engine
ensure_base_image
build_image
check_image_config

[ -n "$CLUSTER" ] || check_protected_mode

# An admin key for this run, in a file the container's user (uid 10001) can read.
FLEET_API_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
export FLEET_API_KEY
printf '# docker/test.sh, run %s\n%s admin\n' "$RUN_ID" "$FLEET_API_KEY" >"$WORK/api-keys.txt"
chmod 0444 "$WORK/api-keys.txt"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE_URL="http://127.0.0.1:$PORT"
FASHION_MNIST=/usr/share/datasets/fashion-mnist
[ -f "$FASHION_MNIST/t10k-labels-idx1-ubyte.gz" ] || apt_install dataset-fashion-mnist
if [ -n "$CLUSTER" ]; then
    cluster_flow
    exit 0
fi
run_container
step "waiting for /healthz and /readyz"
wait_ready 180

step "create a device, train it, save its checkpoint, record its logits"
"$PY" "$HERE/drive.py" before "$BASE_URL" "$WORK/state.json" || fail "driving the service before the restart"

step "restarting the container (docker restart: SIGTERM, then start)"
t0=$SECONDS
docker restart -t 20 "$CONTAINER" >/dev/null
restart_s=$((SECONDS - t0))
info "restarted in $restart_s s"
((restart_s < 20)) || fail "the restart took $restart_s s: the service did not stop on SIGTERM"
wait_ready 180

step "the checkpoint survived: restore it, infer, compare with the logits recorded after save"
"$PY" "$HERE/drive.py" after "$BASE_URL" "$WORK/state.json" || fail "driving the service after the restart"

step "the dashboard and the API docs, from the image's files"
"$PY" "$HERE/drive.py" pages "$BASE_URL" || fail "the pages"

step "federated rounds on the built-in dataset (Debian's files, mounted read-only)"
"$PY" "$HERE/drive.py" federated "$BASE_URL" || fail "federated rounds in the container"

step "the container runs as a non-root user that owns /data"
ids=$(docker exec "$CONTAINER" sh -c 'echo "$(id -u):$(id -g)"')
owner=$(docker exec "$CONTAINER" stat -c %u:%g /data)
info "the service runs as uid:gid $ids; /data is owned by $owner; the device's files:"
docker exec "$CONTAINER" ls -ln /data/devices/docker-dev | sed 's/^/      /'
[ "${ids%%:*}" != 0 ] || fail "the service runs as root"
[ "$owner" = "$ids" ] || fail "/data is owned by $owner, not by the service's $ids"

step "the image's HEALTHCHECK reports healthy"
wait_healthy
