#!/usr/bin/env bash
# services.sh: install and run real servers on 127.0.0.1 for salvor's integration tests.
#
#   scripts/services.sh install          # apt packages, s3s-fs (cargo), nx-27017 venv; idempotent
#   scripts/services.sh start [NAME...]  # default: postgres mariadb redis etcd s3 mongo (also: etcd_tls sftp)
#   scripts/services.sh status           # one line per service
#   scripts/services.sh stop             # stop by recorded pid, remove the state dir
#
# Then `. "${SALVOR_SERVICES_DIR:-/tmp/salvor-services}/env"` exports SALVOR_TEST_* for the tests.
# Each server gets a fresh data dir under the state dir and random passwords (never printed).
# Knobs: SALVOR_SERVICES_DIR (state dir, default /tmp/salvor-services; user postgres must reach it),
# SALVOR_SERVICES_CACHE (nx-27017 venv, default ~/.cache/salvor-services), SALVOR_SERVICES_TIMEOUT
# (readiness, default 60 s), SALVOR_{PG,MYSQL,REDIS,ETCD,ETCD_PEER,ETCD_TLS,ETCD_TLS_PEER,S3,MONGO,SFTP}_PORT. Ports stay
# below 32768: 32768-60999 is the ephemeral range, where a probe can connect to itself.
# "mongo" is nx-27017, a MongoDB wire-protocol stand-in (SQLite-backed), not mongod.
set -euo pipefail

STATE=${SALVOR_SERVICES_DIR:-/tmp/salvor-services}
CACHE=${SALVOR_SERVICES_CACHE:-$HOME/.cache/salvor-services}
VENV=$CACHE/venv
TIMEOUT=${SALVOR_SERVICES_TIMEOUT:-60}
PG_PORT=${SALVOR_PG_PORT:-15432}
MYSQL_PORT=${SALVOR_MYSQL_PORT:-13306}
REDIS_PORT=${SALVOR_REDIS_PORT:-16379}
ETCD_PORT=${SALVOR_ETCD_PORT:-12379}
ETCD_PEER_PORT=${SALVOR_ETCD_PEER_PORT:-12380}
ETCD_TLS_PORT=${SALVOR_ETCD_TLS_PORT:-12389}
ETCD_TLS_PEER_PORT=${SALVOR_ETCD_TLS_PEER_PORT:-12390}
S3_PORT=${SALVOR_S3_PORT:-19000}
MONGO_PORT=${SALVOR_MONGO_PORT:-27018}
SFTP_PORT=${SALVOR_SFTP_PORT:-12222}
DEFAULT_SERVICES="postgres mariadb redis etcd s3 mongo"
ALL_SERVICES="$DEFAULT_SERVICES etcd_tls sftp"
APT_PACKAGES="postgresql postgresql-contrib mariadb-server mariadb-client redis-server etcd-server
  etcd-client openssh-server sqlite3 python3-venv curl openssl"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
secret() { openssl rand -hex 16; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# ---------------------------------------------------------------- install
install_all() {
  local t missing=() p
  t=$(now)
  if [ ! -x /usr/sbin/policy-rc.d ] || { /usr/sbin/policy-rc.d >/dev/null 2>&1; [ $? -ne 101 ]; }; then
    log "writing /usr/sbin/policy-rc.d (exit 101) so apt starts no daemons"
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  log "apt packages present ($(elapsed "$t") s)"

  t=$(now)
  # The S3 server takes minutes to build; skip it when no test needs it.
  if [ "${SALVOR_SERVICES_NO_S3:-0}" = 1 ]; then
    log "s3s-fs skipped (SALVOR_SERVICES_NO_S3=1)"
  elif ! command -v s3s-fs >/dev/null; then
    log "cargo install s3s-fs@0.14.1 (takes a few minutes)"
    CARGO_BUILD_JOBS=1 nice -n 10 cargo install s3s-fs@0.14.1 --features binary --locked --quiet
  fi
  log "s3s-fs present ($(elapsed "$t") s)"

  t=$(now)
  if ! "$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("nx-27017") == "0.8.1"' 2>/dev/null; then
    local py=/usr/bin/python3; [ -x "$py" ] || py=$(command -v python3)
    mkdir -p "$CACHE"
    "$py" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check nx-27017==0.8.1
  fi
  log "nx-27017 venv present ($(elapsed "$t") s)"
}

# ---------------------------------------------------------------- process helpers
# A pid file holds "PID STARTTIME" so a recycled pid is never mistaken for ours.
starttime() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $20 }'; }
record_pid() { echo "$2 $(starttime "$2")" >"$STATE/$1/pid"; }
our_pid() { # prints the recorded pid if that process still runs (zombies count as gone)
  local f=$STATE/$1/pid pid st
  [ -f "$f" ] || return 1
  read -r pid st <"$f"
  [ -n "$pid" ] && [ "$(starttime "$pid")" = "$st" ] || return 1
  case $(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) in Z|X|'') return 1 ;; esac
  echo "$pid"
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
spawn() { # spawn NAME CMD...: run in the background, detached, output to NAME/log
  setsid "${@:2}" </dev/null >>"$STATE/$1/log" 2>&1 &
  record_pid "$1" $!
}
wait_ready() { # wait_ready NAME PROBE...: bounded readiness loop
  local name=$1 deadline=$((SECONDS + TIMEOUT)); shift
  until timeout 5 "$@" >/dev/null 2>&1; do
    local why=exited; our_pid "$name" >/dev/null && why="not ready after ${TIMEOUT}s"
    if [ "$why" = exited ] || [ $SECONDS -ge $deadline ]; then
      log "$name $why; last lines of $STATE/$name/log:"
      tail -n 30 "$STATE/$name/log" >&2 || true
      stop_one "$name"
      exit 1
    fi
    sleep 0.2
  done
}
prepare() { # prepare NAME PORT...: fresh dir, refuse ports already taken by something else
  local name=$1 p; shift
  rm -rf "${STATE:?}/$name"
  mkdir -p "$STATE/$name/data"
  for p in "$@"; do ! port_open "$p" || die "$name: port $p on 127.0.0.1 is already in use"; done
}

# ---------------------------------------------------------------- services
start_postgres() {
  local bin d=$STATE/postgres pw su_pw
  bin=$(pg_bin); [ -n "$bin" ] || die "postgres not installed (run: $0 install)"
  prepare postgres "$PG_PORT"
  mkdir -p "$d/run"; touch "$d/log"; chown -R postgres: "$d"
  runuser -u postgres -- test -x "$d" || die "user postgres cannot reach $d: pick another SALVOR_SERVICES_DIR"
  (cd / && runuser -u postgres -- "$bin/initdb" -D "$d/data" -U postgres -A trust --no-sync >>"$d/log" 2>&1) ||
    { tail -n 30 "$d/log" >&2; die "initdb failed"; }
  cat >"$d/data/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
EOF
  (cd / && runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -l "$d/log" -w -t "$TIMEOUT" -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $d/run -c fsync=off" start >/dev/null) ||
    { tail -n 30 "$d/log" >&2; die "postgres did not start"; }
  record_pid postgres "$(head -n 1 "$d/data/postmaster.pid")"
  wait_ready postgres "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  pw=$(secret); su_pw=$(secret)
  psql -q -v ON_ERROR_STOP=1 -h "$d/run" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<EOF
ALTER ROLE postgres PASSWORD '$su_pw';
CREATE ROLE salvor LOGIN CREATEDB PASSWORD '$pw';
CREATE DATABASE salvor OWNER salvor;
EOF
  cat >"$d/env" <<EOF
export SALVOR_TEST_PG_HOST=127.0.0.1 SALVOR_TEST_PG_PORT=$PG_PORT SALVOR_TEST_PG_USER=salvor
export SALVOR_TEST_PG_PASSWORD=$pw SALVOR_TEST_PG_DATABASE=salvor
export SALVOR_TEST_PG_URL=postgres://salvor:$pw@127.0.0.1:$PG_PORT/salvor
export SALVOR_TEST_PG_SUPERUSER=postgres SALVOR_TEST_PG_SUPERUSER_PASSWORD=$su_pw
export SALVOR_TEST_PG_SOCKET_DIR=$d/run SALVOR_TEST_PG_BIN=$bin
EOF
}

start_mariadb() {
  local d=$STATE/mariadb pw
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || die "mariadb not installed (run: $0 install)"
  prepare mariadb "$MYSQL_PORT"
  mariadb-install-db --no-defaults --user=root --datadir="$d/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$d/install.log" 2>&1 || { tail -n 30 "$d/install.log" >&2; die "mariadb-install-db failed"; }
  spawn mariadb /usr/sbin/mariadbd --no-defaults --user=root --datadir="$d/data" --socket="$d/sock" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --pid-file="$d/mariadbd.pid" --innodb-flush-log-at-trx-commit=0
  wait_ready mariadb mariadb-admin --no-defaults --socket="$d/sock" -uroot ping
  pw=$(secret)
  mariadb --no-defaults --socket="$d/sock" -uroot <<EOF
CREATE USER 'salvor'@'%' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON *.* TO 'salvor'@'%' WITH GRANT OPTION;
CREATE DATABASE salvor;
EOF
  cat >"$d/env" <<EOF
export SALVOR_TEST_MYSQL_HOST=127.0.0.1 SALVOR_TEST_MYSQL_PORT=$MYSQL_PORT SALVOR_TEST_MYSQL_USER=salvor
export SALVOR_TEST_MYSQL_PASSWORD=$pw SALVOR_TEST_MYSQL_DATABASE=salvor SALVOR_TEST_MYSQL_SOCKET=$d/sock
export SALVOR_TEST_MYSQL_URL=mysql://salvor:$pw@127.0.0.1:$MYSQL_PORT/salvor
EOF
}

start_redis() {
  local d=$STATE/redis pw
  pw=$(secret)
  prepare redis "$REDIS_PORT"
  printf '%s\n' "port $REDIS_PORT" "bind 127.0.0.1" "dir $d/data" 'save ""' "appendonly no" \
    "repl-diskless-sync-delay 0" "daemonize no" "requirepass $pw" >"$d/redis.conf"
  chmod 600 "$d/redis.conf"
  spawn redis redis-server "$d/redis.conf"
  REDISCLI_AUTH=$pw wait_ready redis redis-cli -p "$REDIS_PORT" ping
  cat >"$d/env" <<EOF
export SALVOR_TEST_REDIS_HOST=127.0.0.1 SALVOR_TEST_REDIS_PORT=$REDIS_PORT SALVOR_TEST_REDIS_PASSWORD=$pw
export SALVOR_TEST_REDIS_URL=redis://default:$pw@127.0.0.1:$REDIS_PORT/0
EOF
}

start_etcd() {
  local d=$STATE/etcd c=http://127.0.0.1:$ETCD_PORT p=http://127.0.0.1:$ETCD_PEER_PORT
  prepare etcd "$ETCD_PORT" "$ETCD_PEER_PORT"
  spawn etcd etcd --name default --data-dir "$d/data" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "default=$p"
  ETCDCTL_API=3 wait_ready etcd etcdctl --endpoints "$c" endpoint health
  echo "export SALVOR_TEST_ETCD_ENDPOINT=$c" >"$d/env"
}

start_etcd_tls() { # a second etcd with TLS and client certificates (seed 001 runs etcd this way)
  local d=$STATE/etcd_tls c=https://127.0.0.1:$ETCD_TLS_PORT p=http://127.0.0.1:$ETCD_TLS_PEER_PORT
  prepare etcd_tls "$ETCD_TLS_PORT" "$ETCD_TLS_PEER_PORT"
  ( cd "$d" && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=salvor-test-ca \
      -keyout ca.key -out ca.crt >/dev/null 2>&1 &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr >/dev/null 2>&1 &&
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.crt >/dev/null 2>&1 &&
    printf 'extendedKeyUsage=clientAuth\n' >client.ext &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=salvor -keyout client.key -out client.csr >/dev/null 2>&1 &&
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile client.ext -out client.crt >/dev/null 2>&1 ) || die "etcd_tls: cannot make certificates"
  chmod 600 "$d"/*.key
  spawn etcd_tls etcd --name tls --data-dir "$d/data" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "tls=$p" \
    --cert-file "$d/server.crt" --key-file "$d/server.key" --trusted-ca-file "$d/ca.crt" --client-cert-auth
  ETCDCTL_API=3 wait_ready etcd_tls etcdctl --endpoints "$c" --cacert "$d/ca.crt" --cert "$d/client.crt" \
    --key "$d/client.key" endpoint health
  cat >"$d/env" <<EOF
export SALVOR_TEST_ETCD_TLS_ENDPOINT=$c SALVOR_TEST_ETCD_TLS_CA=$d/ca.crt
export SALVOR_TEST_ETCD_TLS_CERT=$d/client.crt SALVOR_TEST_ETCD_TLS_KEY=$d/client.key
EOF
}

start_s3() {
  local d=$STATE/s3 ak sk
  command -v s3s-fs >/dev/null || die "s3s-fs not installed (run: $0 install)"
  ak=$(secret); sk=$(secret)
  prepare s3 "$S3_PORT"
  mkdir -p "$d/data/salvor-test"
  spawn s3 s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$ak" --secret-key "$sk" "$d/data"
  wait_ready s3 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"
  cat >"$d/env" <<EOF
export SALVOR_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT SALVOR_TEST_S3_REGION=us-east-1
export SALVOR_TEST_S3_ACCESS_KEY=$ak SALVOR_TEST_S3_SECRET_KEY=$sk SALVOR_TEST_S3_BUCKET=salvor-test
EOF
}

start_mongo() {
  local d=$STATE/mongo
  [ -x "$VENV/bin/nx-27017" ] || die "nx-27017 not installed (run: $0 install)"
  prepare mongo "$MONGO_PORT"
  spawn mongo "$VENV/bin/nx-27017" --data-dir "$d/data" --host 127.0.0.1 -p "$MONGO_PORT" \
    --log-file "$d/nx.log" --pid-file "$d/nx.pid"
  wait_ready mongo "$VENV/bin/python" -c "import pymongo; pymongo.MongoClient('mongodb://127.0.0.1:$MONGO_PORT', \
    serverSelectionTimeoutMS=2000).admin.command('ping')"
  cat >"$d/env" <<EOF
export SALVOR_TEST_MONGO_URL=mongodb://127.0.0.1:$MONGO_PORT/ SALVOR_TEST_MONGO_STANDIN=nx-27017
EOF
}

start_sftp() {
  local d=$STATE/sftp
  [ -x /usr/sbin/sshd ] || die "openssh-server not installed (run: $0 install)"
  prepare sftp "$SFTP_PORT"
  mkdir -p /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
  cp "$d/client_key.pub" "$d/authorized_keys"
  cat >"$d/sshd_config" <<EOF
Port $SFTP_PORT
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile none
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
EOF
  spawn sftp /usr/sbin/sshd -D -e -f "$d/sshd_config"
  wait_ready sftp ssh-keyscan -p "$SFTP_PORT" -t ed25519 127.0.0.1
  ssh-keyscan -p "$SFTP_PORT" -t ed25519 127.0.0.1 >"$d/known_hosts" 2>/dev/null
  cat >"$d/env" <<EOF
export SALVOR_TEST_SFTP_HOST=127.0.0.1 SALVOR_TEST_SFTP_PORT=$SFTP_PORT SALVOR_TEST_SFTP_USER=$(id -un)
export SALVOR_TEST_SFTP_KEY=$d/client_key SALVOR_TEST_SFTP_KNOWN_HOSTS=$d/known_hosts
EOF
}

# ---------------------------------------------------------------- commands
write_env() {
  local f
  { echo "# written by scripts/services.sh start; source it"; echo "export SALVOR_TEST_SERVICES=1"
    for f in "$STATE"/*/env; do [ -f "$f" ] && cat "$f"; done; } >"$STATE/env.tmp"
  chmod 600 "$STATE/env.tmp"; mv "$STATE/env.tmp" "$STATE/env"
}

start() {
  local s t
  # shellcheck disable=SC2086 # word splitting intended
  [ $# -gt 0 ] || set -- $DEFAULT_SERVICES
  for s in "$@"; do [[ " $ALL_SERVICES " == *" $s "* ]] || die "unknown service '$s' (known: $ALL_SERVICES)"; done
  mkdir -p "$STATE"; chmod 755 "$STATE"; touch "$STATE/.salvor-services"
  for s in "$@"; do
    if our_pid "$s" >/dev/null; then log "$s already running"; continue; fi
    t=$(now); "start_$s"; write_env
    log "$s ready on 127.0.0.1 ($(elapsed "$t") s)"
  done
  log "env file: $STATE/env"
}

stop_one() { # stop_one NAME: SIGINT for postgres (fast shutdown), SIGTERM otherwise, SIGKILL after 30 s
  local name=$1 pid sig=TERM i
  pid=$(our_pid "$name") || { rm -f "$STATE/$name/pid"; return 0; }
  [ "$name" = postgres ] && sig=INT
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do our_pid "$name" >/dev/null || break; sleep 0.2; done
  if our_pid "$name" >/dev/null; then
    log "$name (pid $pid) ignored SIG$sig for 30 s, killing"; kill -KILL -- "-$pid" "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$name/pid"
}

stop() {
  local s
  [ -d "$STATE" ] || { log "nothing to stop"; return 0; }
  for s in $ALL_SERVICES; do
    if [ -f "$STATE/$s/pid" ]; then stop_one "$s"; log "$s stopped"; fi
  done
  # remove only a dir that start created (guards against a mistyped SALVOR_SERVICES_DIR)
  if [ -f "$STATE/.salvor-services" ]; then rm -rf "${STATE:?}"; else log "left $STATE in place (no marker)"; fi
}

status() {
  local s pid rc=0
  for s in $ALL_SERVICES; do
    if pid=$(our_pid "$s"); then echo "$s: running (pid $pid)"
    elif [ -f "$STATE/$s/pid" ]; then echo "$s: dead (see $STATE/$s/log)"; rc=1
    else echo "$s: stopped"; fi
  done
  return $rc
}

case ${1:-} in
  install) install_all ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
