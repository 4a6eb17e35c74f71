#!/usr/bin/env bash
# make bench: the standard parley-bench suite (docs/benchmarks.md).
#
#   bench/run.sh [BUILD_DIR]
#
# Starts a fresh parleyd (and a fresh bench/floor reference server) for every
# scenario, so each memory figure starts from a clean process, runs the
# scenario, stops the server by its PID, and finally merges the runs into
# bench/results/latest.json, judged by the targets in bench/targets.conf
# (read at run time; each run also prints its own). Bounded in time:
# every step runs under `timeout`; the whole suite takes about 5 minutes, nearly 3 of them the
# cluster scenario (1, 2 and 3 nodes).
#
# Environment (all optional):
#   BENCH_ONLY="idle direct"  run only these scenarios (idle echo direct group
#                             catchup storm cluster); cluster runs only when
#                             redis-server and PostgreSQL's server binaries
#                             (/usr/lib/postgresql/*/bin) are installed
#   IDLE_CONNS=15000 STORM_CONNS=15000 CATCHUP_MESSAGES=100000
#   BENCH_SECONDS=10          length of each echo/direct/group run
#   DIRECT_PAIRS=500 BENCH_GROUPS=10 GROUP_SIZE=100
#   BENCH_OUT=FILE            where to write the merged results
#                             (default bench/results/latest.json)
#   CLUSTER_NODES="1 2 3"     node counts of the cluster scenario (1..8)
#   CLUSTER_PAIRS=100 CLUSTER_RATE=2000 CLUSTER_GROUPS=8 CLUSTER_GROUP_SIZE=30
#   CLUSTER_SECONDS=10        the cluster scenario's load (each of its 4 phases)
#   BENCH_PROFILE=direct      also record `perf record -g` of parleyd during that
#                             scenario into bench/results/perf-<scenario>.txt
set -euo pipefail
B=${1:-build}
cd "$(dirname "$0")/.."
BENCH=./$B/bench/parley-bench
FLOOR=./$B/bench/floor
PARLEYD=./$B/parleyd
for f in "$BENCH" "$FLOOR" "$PARLEYD"; do
    [ -x "$f" ] || { echo "run.sh: $f is missing (make bench builds it)" >&2; exit 1; }
done
mkdir -p bench/results
out=${BENCH_OUT:-bench/results/latest.json}
tmp=$(mktemp -d /tmp/parley-bench.XXXXXX)
runs=$tmp/runs
mkdir -p "$runs"
SECS=${BENCH_SECONDS:-10}
ONLY=${BENCH_ONLY:-idle echo direct group catchup storm cluster}
started=$(date +%s)

srv_pid=
srv_port=
stop_server() {
    if [ -n "$srv_pid" ]; then
        kill -TERM "$srv_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$srv_pid" 2>/dev/null || true
        wait "$srv_pid" 2>/dev/null || true
        srv_pid=
    fi
}
# the cluster scenario's processes (below), each stopped by its PID
node_pids=()
redis_pid=
pg_pid=
pg_dir=
wait_pid() {    # wait_pid PID: wait up to 10 s for it to end, then SIGKILL
    local pid=$1
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_pid() {    # stop_pid PID: SIGTERM, then wait_pid
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || true
    wait_pid "$1"
}
stop_nodes() {  # every node told at once (one signal each: a second forces the stop)
    local p
    for p in "${node_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${node_pids[@]}"; do wait_pid "$p"; done
    node_pids=()
}
stop_cluster() {
    stop_nodes
    stop_pid "$redis_pid"; redis_pid=
    # SIGINT is PostgreSQL's fast shutdown; the postmaster is not our child
    # (pg_ctl started it), so wait for it by its PID
    if [ -n "$pg_pid" ]; then
        kill -INT "$pg_pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pg_pid" 2>/dev/null || true
        pg_pid=
    fi
    [ -n "$pg_dir" ] && rm -rf "$pg_dir"
    pg_dir=
}
# the cluster step's load generator (under timeout, which passes a TERM on)
cl_bench_pid=
trap '[ -n "$cl_bench_pid" ] && stop_pid "$cl_bench_pid"; stop_server; stop_cluster; rm -rf "$tmp"' EXIT

# start_parleyd NAME [extra flags]: a fresh server with its own data directory.
# --insecure-fast-kdf: benchmark users are provisioned at the minimum Argon2id
# cost (parleyd logs a warning); real users always get the full cost. The
# per-address and per-user rate limits are off: the load generator is a few
# addresses sending far beyond what one person would. Admission control
# (--admit-rate) is off except for the storm, which measures it.
start_parleyd() {
    local name=$1; shift
    mkdir -p "$tmp/$name"
    "$PARLEYD" --port 0 --listen 127.0.0.1 --data-dir "$tmp/$name/data" --web-dir web \
        --insecure-fast-kdf --rate-frames 0 --rate-msgs 0 --rate-user-msgs 0 \
        --rate-handshakes 0 --rate-logins 0 --max-user-conns 100000 "$@" \
        >"$tmp/$name/out" 2>"$tmp/$name/err" &
    srv_pid=$!
    wait_port "$tmp/$name/out"
}

start_floor() {
    local name=$1
    mkdir -p "$tmp/$name"
    "$FLOOR" --port 0 --max-seconds 600 >"$tmp/$name/out" 2>"$tmp/$name/err" &
    srv_pid=$!
    wait_port "$tmp/$name/out"
}

wait_port() {
    srv_port=
    for _ in $(seq 100); do
        srv_port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\)$/\1/p' "$1" 2>/dev/null | head -1 || true)
        [ -n "$srv_port" ] && return 0
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "run.sh: server did not start:" >&2
    cat "$(dirname "$1")/err" >&2
    exit 1
}

# bench LABEL SCENARIO TIMEOUT [flags]: runs parley-bench against the current
# server; a failed run is reported and the suite goes on.
bench() {
    local label=$1 scenario=$2 limit=$3; shift 3
    local prof=
    if [ "${BENCH_PROFILE:-}" = "$label" ] && command -v perf >/dev/null; then
        # parleyd is built without frame pointers: unwind with DWARF
        perf record --call-graph dwarf,16384 -F 499 -o "$tmp/perf.data" -p "$srv_pid" >/dev/null 2>&1 &
        prof=$!
    fi
    if ! timeout "$limit" "$BENCH" "$scenario" --port "$srv_port" --pid "$srv_pid" \
            --label "$label" --json "$runs/$label.json" "$@"; then
        echo "run.sh: $label failed or fell short (server log: see below)" >&2
        tail -5 "$tmp"/*/err >&2 || true
    fi
    if [ -n "$prof" ]; then
        kill -INT "$prof" 2>/dev/null || true
        wait "$prof" 2>/dev/null || true
        {
            echo "# perf record --call-graph dwarf -p <parleyd> during $label"
            echo "# self time by symbol"
            perf report -i "$tmp/perf.data" --stdio --no-children --sort sym -g none --percent-limit 1 2>/dev/null
            echo "# inclusive time (children) by symbol"
            perf report -i "$tmp/perf.data" --stdio --children --sort sym -g none --percent-limit 3 2>/dev/null
        } | grep -v '^$' >"bench/results/perf-$label.txt" || true
        echo "perf profile of parleyd during $label: bench/results/perf-$label.txt"
    fi
}

want() { case " $ONLY " in *" $1 "*) return 0;; *) return 1;; esac; }

echo "parley-bench suite: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"

# the disk under the servers' data directories: one fdatasync is the floor
# under every durable acknowledgement
"$BENCH" fsync --dir "$tmp" --label fsync --json "$runs/fsync.json" || true

if want idle; then
    start_parleyd idle --admit-rate 0
    bench idle idle 240 --conns "${IDLE_CONNS:-15000}" --workers 2
    stop_server
    start_floor idle-floor
    bench idle-floor idle 120 --floor --conns "${IDLE_CONNS:-15000}" --workers 2
    stop_server
fi

if want echo; then
    start_parleyd echo --admit-rate 0
    bench echo echo 120 --conns 100 --size 200 --seconds "$SECS"
    stop_server
    start_floor echo-floor
    bench echo-floor echo 120 --floor --conns 100 --size 200 --seconds "$SECS"
    stop_server
fi

if want direct; then
    pairs=${DIRECT_PAIRS:-500}
    start_parleyd direct --admit-rate 0
    # flat out: durable msgs/s, send->ack, and the disk bytes per message
    # (/proc/PID/io of this server) beside the stored record's size
    bench direct direct 180 --pairs "$pairs" --window 16 --seconds "$SECS"
    stop_server
    start_floor direct-floor
    bench direct-floor direct 120 --floor --pairs "$pairs" --window 16 --seconds "$SECS"
    stop_server
    # the targets: send->ack p99 at 5,000 msgs/s offered, judged against
    # the fdatasync p99 of the data directory's disk measured in the same
    # run (--dir), and send->ack p99 / p99.9 at 50,000 msgs/s offered (the
    # generator may reach less on 2 cores: the rate reached is printed)
    start_parleyd direct-5k --admit-rate 0
    bench direct-5k direct 180 --pairs "$pairs" --rate 5000 --seconds "$SECS" --dir "$tmp/direct-5k"
    stop_server
    start_parleyd direct-paced --admit-rate 0
    bench direct-paced direct 180 --pairs "$pairs" --rate 50000 --seconds "$SECS" --dir "$tmp/direct-paced"
    stop_server
    # the same two rates against the floor: what the machine and the load
    # generator alone add to every ack at that rate (nothing stored)
    start_floor direct-5k-floor
    bench direct-5k-floor direct 120 --floor --pairs "$pairs" --rate 5000 --seconds "$SECS"
    stop_server
    start_floor direct-paced-floor
    bench direct-paced-floor direct 120 --floor --pairs "$pairs" --rate 50000 --seconds "$SECS"
    stop_server
    # and at half of the rate this machine reached flat out, for a latency
    # figure that is not dominated by an overloaded queue
    max=$(sed -n 's/.*"msgs_per_s":\([0-9.]*\).*/\1/p' "$runs/direct.json" 2>/dev/null | head -1)
    if [ -n "$max" ]; then
        half=$(awk -v m="$max" 'BEGIN { printf "%d", m / 2 }')
        start_parleyd direct-half --admit-rate 0
        bench direct-half direct 180 --pairs "$pairs" --rate "$half" --seconds "$SECS"
        stop_server
    fi
fi

if want group; then
    start_parleyd group --admit-rate 0
    bench group group 180 --groups "${BENCH_GROUPS:-10}" --group-size "${GROUP_SIZE:-100}" --senders 2 \
        --window 16 --seconds "$SECS"
    stop_server
fi

if want catchup; then
    start_parleyd catchup --admit-rate 0
    bench catchup catchup 300 --messages "${CATCHUP_MESSAGES:-100000}"
    stop_server
fi

if want storm; then
    # the server's default admission control (--admit-rate 5000 per I/O thread)
    start_parleyd storm
    bench storm storm 300 --conns "${STORM_CONNS:-15000}" --workers 4 --bg-rate 200 --pre 3
    stop_server
fi

# free_port: a TCP port on 127.0.0.1 below the ephemeral range that nothing
# listens on now
free_port() {
    local p
    for _ in $(seq 50); do
        p=$(( 20000 + RANDOM % 12000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    echo "run.sh: no free port" >&2
    return 1
}

# the cluster's engines: why they cannot run here, or nothing
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
cluster_missing() {
    command -v redis-server >/dev/null || { echo "redis-server is not installed"; return; }
    [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] \
        || { echo "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl) are not installed"; return; }
    command -v psql >/dev/null || { echo "psql is not installed"; return; }
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 && command -v runuser >/dev/null \
            || echo "running as root needs the postgres user and runuser (PostgreSQL refuses root)"
    fi
}

# PostgreSQL refuses to run as root: as root, its commands run as postgres
pg_as=()
[ "$(id -u)" = 0 ] && pg_as=(runuser -u postgres --)

# start_postgres: initdb + pg_ctl start in a fresh temp dir, 127.0.0.1 only,
# fsync on (acks wait for it, as in production); sets pg_port, pg_pid
start_postgres() {
    pg_dir=$(mktemp -d /tmp/parley-bench-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$pg_dir"
    timeout 60 "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres \
        --auth=trust -E UTF8 --locale=C --no-sync --no-instructions >"$pg_dir/initdb.log" 2>&1 \
        || { echo "run.sh: initdb failed:" >&2; tail -5 "$pg_dir/initdb.log" >&2; return 1; }
    cat >>"$pg_dir/data/postgresql.conf" <<CONF
# parley-bench cluster (bench/run.sh)
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = 64MB
fsync = on
synchronous_commit = on
autovacuum = off
max_wal_size = 256MB
log_min_messages = warning
log_lock_waits = on
CONF
    local try
    for try in 1 2 3; do
        pg_port=$(free_port)
        if timeout 60 "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -t 30 \
                -o "-p $pg_port -c unix_socket_directories=$pg_dir" start >"$pg_dir/pg_ctl.out" 2>&1; then
            pg_pid=$(head -1 "$pg_dir/data/postmaster.pid")
            psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
                -c "CREATE ROLE parley LOGIN" >/dev/null
            return 0
        fi
    done
    echo "run.sh: PostgreSQL did not start:" >&2
    tail -5 "$pg_dir/log" >&2 || true
    return 1
}

# start_redis DIR: no persistence, 127.0.0.1 only; sets redis_port, redis_pid
start_redis() {
    local d=$1 try
    mkdir -p "$d"
    for try in 1 2 3; do
        redis_port=$(free_port)
        redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$d" \
            --logfile "$d/redis.log" --daemonize no >/dev/null 2>&1 &
        redis_pid=$!
        for _ in $(seq 50); do
            redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        stop_pid "$redis_pid"; redis_pid=
    done
    echo "run.sh: redis-server did not start:" >&2
    tail -5 "$d/redis.log" >&2 || true
    return 1
}

# start_node NAME DB ID: one cluster node on the shared PostgreSQL database DB
# and Redis, the suite's flags; appends its PID to node_pids, its port to
# node_ports
start_node() {
    local name=$1 db=$2 id=$3
    mkdir -p "$tmp/$name"
    "$PARLEYD" --port 0 --listen 127.0.0.1 --data-dir "$tmp/$name/data" --web-dir web \
        --store "postgresql://parley@127.0.0.1:$pg_port/$db" --bus "redis://127.0.0.1:$redis_port" \
        --node-id "$id" --insecure-fast-kdf --rate-frames 0 --rate-msgs 0 --rate-user-msgs 0 \
        --rate-handshakes 0 --rate-logins 0 --max-user-conns 100000 --admit-rate 0 \
        >"$tmp/$name/out" 2>"$tmp/$name/err" &
    srv_pid=$!
    node_pids+=("$srv_pid")
    wait_port "$tmp/$name/out"
    srv_pid=
    node_ports+=("$srv_port")
}

if want cluster; then
    why=$(cluster_missing)
    if [ -n "$why" ]; then
        echo "run.sh: cluster skipped: $why"
    elif start_postgres; then
        # each node count gets a fresh database and a fresh redis-server
        for n in ${CLUSTER_NODES:-1 2 3}; do
            case $n in [1-8]) ;; *) echo "run.sh: CLUSTER_NODES: $n is not 1..8" >&2; continue;; esac
            db=bench_n$n
            PGOPTIONS='-c client_min_messages=warning' psql -q -h 127.0.0.1 -p "$pg_port" -U postgres \
                -d postgres -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $db" \
                -c "CREATE DATABASE $db OWNER parley" >/dev/null
            dl0=$(grep -c "deadlock detected" "$pg_dir/log" 2>/dev/null || true)
            lw0=$(grep -c "still waiting for" "$pg_dir/log" 2>/dev/null || true)
            start_redis "$tmp/cluster-$n-redis" || break
            node_ports=()
            for k in $(seq "$n"); do start_node "cluster-$n-node$k" "$db" "n$k"; done
            ports=$(IFS=,; echo "${node_ports[*]}")
            pids=$(IFS=,; echo "${node_pids[*]}")
            echo "cluster: $n node(s) on ports $ports (PIDs $pids), redis $redis_port, postgres $pg_port"
            # in the background and waited for, so that the trap can stop it
            timeout 300 "$BENCH" cluster --port "${node_ports[0]}" --pid "${node_pids[0]}" \
                    --ports "$ports" --pids "$pids" --redis-pid "$redis_pid" --pg-pid "$pg_pid" \
                    --label "cluster-$n" --json "$runs/cluster-$n.json" \
                    --pairs "${CLUSTER_PAIRS:-100}" --rate "${CLUSTER_RATE:-2000}" \
                    --groups "${CLUSTER_GROUPS:-8}" \
                    --group-size "${CLUSTER_GROUP_SIZE:-30}" --senders 2 --window 8 \
                    --seconds "${CLUSTER_SECONDS:-10}" &
            cl_bench_pid=$!
            if ! wait "$cl_bench_pid"; then
                echo "run.sh: cluster-$n failed or fell short (node logs: see below)" >&2
                tail -5 "$tmp"/cluster-"$n"-node*/err >&2 || true
            fi
            cl_bench_pid=
            # the bus, summed over the nodes: lost events would show here
            for p in "${node_ports[@]}"; do
                curl -s -m 5 "http://127.0.0.1:$p/metrics" || true
            done | awk '/^parley_bus_(published|received|dropped|refused|resyncs|reconnects)_total/ {
                    k = $1; sub(/^parley_bus_/, "", k); sub(/_total.*/, "", k); v[k] += $NF }
                END { printf "cluster-'"$n"': bus over all nodes:"; n = split("published received dropped refused resyncs reconnects", o, " ");
                      for (i = 1; i <= n; i++) printf " %s %d", o[i], v[o[i]]; print "" }'
            stop_nodes
            stop_pid "$redis_pid"; redis_pid=
            # what the run cost in lock conflicts between the nodes' writers
            # (lock waits past deadlock_timeout, 1 s, are logged)
            dl1=$(grep -c "deadlock detected" "$pg_dir/log" 2>/dev/null || true)
            lw1=$(grep -c "still waiting for" "$pg_dir/log" 2>/dev/null || true)
            echo "cluster-$n: PostgreSQL logged $(( ${dl1:-0} - ${dl0:-0} )) deadlocks and" \
                "$(( ${lw1:-0} - ${lw0:-0} )) lock waits over 1 s;" \
                "node logs: $(cat "$tmp"/cluster-"$n"-node*/err | grep -c 'level=error' || true) errors," \
                "$(cat "$tmp"/cluster-"$n"-node*/err | grep -c 'level=warn' || true) warnings" \
                "(kept in bench/results/cluster-$n-node*.log)"
            for k in $(seq "$n"); do cp "$tmp/cluster-$n-node$k/err" "bench/results/cluster-$n-node$k.log"; done
        done
        cp "$pg_dir/log" bench/results/cluster-postgres.log 2>/dev/null || true
    fi
    stop_cluster
fi

shopt -s nullglob
files=("$runs"/*.json)
if [ ${#files[@]} -eq 0 ]; then
    echo "run.sh: no results" >&2
    exit 1
fi
"$BENCH" summary --out "$out" "${files[@]}"
echo "suite took $(( $(date +%s) - started )) s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
