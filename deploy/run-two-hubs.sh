#!/usr/bin/env bash
# Two ragstream hubs (a and b) sharing one database and Redis, behind nginx running
# deploy/nginx.conf, all on loopback: the README's "Run several hubs". Prints the URL once
# everything is ready; Ctrl-C (or TERM) stops the three processes.
#
#   cargo build --release && deploy/run-two-hubs.sh
#
# Settings (environment), with their defaults:
#   DATABASE_URL   sqlite://$PWD/data/ragstream.db   or postgres://user@host:port/db (it must exist)
#   REDIS_URL      redis://127.0.0.1:6379/0
#   LB_PORT        8080   nginx
#   HUB_A_PORT     8081   hub a
#   HUB_B_PORT     8082   hub b
#   RAGSTREAM_BIN  target/release/ragstream of this checkout
#   RUN_DIR        a new temporary folder: nginx's prefix and config, and the hubs' logs
# Every other RAGSTREAM_* setting (RAGSTREAM_ADMIN_KEY, ...) reaches both hubs as it is.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DATABASE_URL=${DATABASE_URL:-sqlite://$PWD/data/ragstream.db}
# Without Redis each hub would keep its own limits and tickets: never for two hubs.
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
lb_port=${LB_PORT:-8080}
a_port=${HUB_A_PORT:-8081}
b_port=${HUB_B_PORT:-8082}
bin=${RAGSTREAM_BIN:-$root/target/release/ragstream}
run_dir=${RUN_DIR:-$(mktemp -d -t ragstream-two-hubs.XXXXXX)}

if [[ ! -x $bin ]]; then
    echo "no hub binary at $bin: run 'cargo build --release' first (or set RAGSTREAM_BIN)" >&2
    exit 1
fi
command -v nginx >/dev/null || { echo "nginx not found (apt-get install nginx)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found (apt-get install curl)" >&2; exit 1; }

pids=()
stop() {
    trap - INT TERM EXIT
    if ((${#pids[@]})); then
        echo "stopping (pids ${pids[*]})" >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# Waits until http://127.0.0.1:$1/readyz answers 200, while process $2 lives.
wait_ready() {
    local deadline=$((SECONDS + 60))
    until curl -fs -o /dev/null "http://127.0.0.1:$1/readyz"; do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "the process on port $1 exited; see $run_dir" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "port $1 not ready within 60 s; see $run_dir" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# One after the other: the first migrates the database.
for hub in a b; do
    port=$a_port
    [[ $hub == b ]] && port=$b_port
    echo "hub $hub: RAGSTREAM_HUB_ID=$hub RAGSTREAM_ADDR=127.0.0.1:$port $bin (log $run_dir/hub-$hub.log)"
    RAGSTREAM_HUB_ID=$hub RAGSTREAM_ADDR=127.0.0.1:$port "$bin" 2>"$run_dir/hub-$hub.log" &
    pids+=($!)
    wait_ready "$port" "$!"
done

# The shipped config with this run's ports written over 8080 / 8081 / 8082.
mkdir -p "$run_dir/logs" "$run_dir/temp"
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$lb_port/" \
    -e "s/127\.0\.0\.1:8081/127.0.0.1:$a_port/" \
    -e "s/127\.0\.0\.1:8082/127.0.0.1:$b_port/" \
    "$root/deploy/nginx.conf" >"$run_dir/nginx.conf"
echo "nginx: nginx -p $run_dir -c $run_dir/nginx.conf"
nginx -p "$run_dir" -c "$run_dir/nginx.conf" &
pids+=($!)
wait_ready "$lb_port" "$!"

echo "ready: http://127.0.0.1:$lb_port (Ctrl-C stops the hubs and nginx)"
# Until Ctrl-C, TERM, or one of the three exits (then the others are stopped too).
set +e
wait -n "${pids[@]}"
status=$?
echo "a process exited (status $status); stopping the others" >&2
exit 1
