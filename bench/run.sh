#!/usr/bin/env bash
# salvor benchmark harness: runs salvor side by side with restic, borg, rustic
# and bupstash on deterministic corpora. See bench/README.md.
#
#   bench/run.sh --install                 install the peers (idempotent)
#   bench/run.sh [--small] [--runs N] [--tools a,b] [--steps x,y] [--no-verify] [--keep]
#   bench/run.sh --corpus-only [--small]   only build (and cache) the corpora
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
CARGO_BIN_DIR="${CARGO_HOME:-$HOME/.cargo}/bin"
[ -d "$CARGO_BIN_DIR" ] && PATH="$CARGO_BIN_DIR:$PATH"

BENCH_DIR=${BENCH_DIR:-/dev/shm/salvor-bench}
SALVOR_BIN=${SALVOR_BIN:-$REPO_ROOT/target/release/salvor}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${BENCH_PG_PORT:-15532}   # throwaway server on 127.0.0.1; < 32768; scripts/services.sh uses 15432
BENCH_PASSWORD=${BENCH_PASSWORD:-salvor-bench-password}
BORG_ENCRYPTION=${BORG_ENCRYPTION:-repokey}  # AES-CTR + HMAC-SHA256 (fast with AES-NI/SHA-NI)
RESTIC_REPO_VERSION=${RESTIC_REPO_VERSION:-2}  # v2 = compressed repo format
STDIN_NAME=dump.sql
TIME_BIN=${TIME_BIN:-/usr/bin/time}

ALL_TOOLS=salvor,restic,borg,rustic,bupstash
ALL_STEPS=init,tree-first,tree-unchanged,tree-changed,restore-tree,dump-day1,dump-day2,restore-dump

MODE=full RUNS=1 TOOLS=$ALL_TOOLS STEPS=$ALL_STEPS VERIFY=1 KEEP=0 ACTION=bench

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --install) ACTION=install ;;
    --corpus-only) ACTION=corpus ;;
    --small) MODE=small ;;
    --full) MODE=full ;;
    --runs) RUNS=$2; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --tools) TOOLS=$2; shift ;;
    --tools=*) TOOLS=${1#*=} ;;
    --steps) STEPS=$2; shift ;;
    --steps=*) STEPS=${1#*=} ;;
    --no-verify) VERIFY=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ----------------------------------------------------------------------------
# install
# ----------------------------------------------------------------------------
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

do_install() {
  local pkgs=(restic borgbackup libsodium-dev pkg-config hyperfine time rsync python3
              postgresql postgresql-contrib diffutils)
  local missing=() p
  for p in "${pkgs[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  else
    log "apt packages present"
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain first"
  # -j1 + nice: do not starve a concurrent build on a small machine
  local crate bin
  for crate in rustic-rs:rustic bupstash:bupstash; do
    bin=${crate#*:}; crate=${crate%%:*}
    if command -v "$bin" >/dev/null; then
      log "$bin present ($(command -v "$bin"))"
    else
      log "cargo install --locked $crate (slow)"
      CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} nice -n 19 cargo install --locked "$crate"
    fi
  done
}

if [ "$ACTION" = install ]; then do_install; exit 0; fi

for c in python3 rsync du diff cmp; do command -v "$c" >/dev/null || die "$c missing (run $0 --install)"; done
[ -x "$TIME_BIN" ] || die "$TIME_BIN missing (apt-get install time, or run $0 --install)"

# ----------------------------------------------------------------------------
# corpus
# ----------------------------------------------------------------------------
if [ "$MODE" = small ]; then
  TREE_BYTES=100e6 TREE_FILES=8000
  TREE_SOURCES=(/usr/lib/gcc=10e6 /usr/lib/python3.11=5e6 /usr/share=45e6 "$HOME/.cargo/registry/src")
  PG_SCALE=5 DOC_ROWS=50000 PG_TXNS=3000
else
  TREE_BYTES=1.2e9 TREE_FILES=80000
  TREE_SOURCES=(/usr/lib/gcc=125e6 /usr/lib/python3.11=60e6 /usr/share=520e6 "$HOME/.cargo/registry/src")
  PG_SCALE=50 DOC_ROWS=500000 PG_TXNS=30000
fi
CORPUS=$BENCH_DIR/corpus-$MODE
LIVE=$BENCH_DIR/live/data      # the path every tool backs up (tree, then tree2 synced over it)
mkdir -p "$CORPUS" "$BENCH_DIR/live"

build_tree() {
  if [ -f "$CORPUS/tree.json" ] && [ -d "$CORPUS/tree" ]; then return; fi
  log "building tree corpus ($TREE_BYTES bytes max, $TREE_FILES files max) from ${TREE_SOURCES[*]}"
  rm -rf "$CORPUS/tree" "$CORPUS/tree.tmp" "$CORPUS/tree2" "$CORPUS/tree2.json"
  python3 "$SCRIPT_DIR/corpus.py" tree --out "$CORPUS/tree.tmp" --bytes "$TREE_BYTES" \
    --files "$TREE_FILES" "${TREE_SOURCES[@]}" > "$CORPUS/tree.json.tmp"
  mv "$CORPUS/tree.tmp" "$CORPUS/tree"
  mv "$CORPUS/tree.json.tmp" "$CORPUS/tree.json"
}

build_tree2() {
  if [ -f "$CORPUS/tree2.json" ] && [ -d "$CORPUS/tree2" ]; then return; fi
  log "building tree2 (tree with ~2% of files modified/added/removed, seed 42)"
  rm -rf "$CORPUS/tree2" "$CORPUS/tree2.tmp"
  cp -a "$CORPUS/tree" "$CORPUS/tree2.tmp"
  python3 "$SCRIPT_DIR/corpus.py" mutate --dir "$CORPUS/tree2.tmp" --seed 42 --fraction 0.02 \
    > "$CORPUS/tree2.json.tmp"
  mv "$CORPUS/tree2.tmp" "$CORPUS/tree2"
  mv "$CORPUS/tree2.json.tmp" "$CORPUS/tree2.json"
}

PG_DIR=""
pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_stop() {
  if [ -n "$PG_DIR" ]; then
    log "stopping PostgreSQL"
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=""
  fi
}
trap pg_stop EXIT
trap 'exit 130' INT TERM
pg_start() {
  PG_DIR=$BENCH_DIR/pg
  pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"; mkdir -p "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
  log "starting throwaway PostgreSQL on 127.0.0.1:$PG_PORT"
  pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync -E UTF8 --locale=C \
    > "$BENCH_DIR/pg-initdb.log" 2>&1 || { cat "$BENCH_DIR/pg-initdb.log" >&2; die "initdb failed"; }
  # autovacuum off: the physical row order (and so the dump) depends only on the statements run
  pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c autovacuum=off" \
    start > /dev/null || { cat "$PG_DIR/server.log" >&2; die "pg_ctl start failed (port $PG_PORT busy? set BENCH_PG_PORT)"; }
}
PGCONN=(-h 127.0.0.1 -p "$PG_PORT" -U postgres)
PGDUMP_OPTS=()
# newer pg_dump (15.14+) writes a random \restrict key unless given one: fix it for reproducibility
if [[ $("$PG_BIN/pg_dump" --help 2>/dev/null || true) == *--restrict-key* ]]; then PGDUMP_OPTS=(--restrict-key=salvorbench); fi
psql_bench() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${PGCONN[@]}" -d bench "$@"; }

docs_insert_sql() { # $1 first id, $2 last id
  cat <<SQL
INSERT INTO docs
SELECT i, 'document ' || i,
       array_to_string(ARRAY(SELECT md5(i::text || '-' || k) FROM generate_series(1, 14) k), ' ')
FROM generate_series($1, $2) i;
SQL
}

build_dumps() {
  if [ -f "$CORPUS/day1.sql" ] && [ -f "$CORPUS/day2.sql" ]; then return; fi
  [ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb missing (apt-get install postgresql, or run $0 --install)"
  rm -f "$CORPUS/day1.sql" "$CORPUS/day2.sql"
  pg_start
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${PGCONN[@]}" -d postgres -c 'CREATE DATABASE bench'
  log "day 1: pgbench -i -s $PG_SCALE + $DOC_ROWS text rows"
  "$PG_BIN/pgbench" -i -q -s "$PG_SCALE" "${PGCONN[@]}" bench > "$BENCH_DIR/pgbench-init.log" 2>&1 \
    || { cat "$BENCH_DIR/pgbench-init.log" >&2; die "pgbench -i failed"; }
  { echo 'CREATE TABLE docs (id integer PRIMARY KEY, title text NOT NULL, body text NOT NULL);'
    docs_insert_sql 1 "$DOC_ROWS"
    echo 'VACUUM ANALYZE docs;'; } | psql_bench
  "$PG_BIN/pg_dump" "${PGCONN[@]}" ${PGDUMP_OPTS[@]+"${PGDUMP_OPTS[@]}"} -d bench -f "$CORPUS/day1.sql.tmp"
  log "day 2: $PG_TXNS pgbench transactions (seed 42) + text-table updates/deletes/inserts"
  # The built-in TPC-B-like script, except pgbench_history.mtime is derived from
  # aid instead of CURRENT_TIMESTAMP, so the day-2 dump is reproducible.
  cat > "$BENCH_DIR/tpcb-det.sql" <<'SQL'
\set aid random(1, :naccounts)
\set bid random(1, :nbranches)
\set tid random(1, :ntellers)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, timestamp '2024-01-02 00:00:00' + (:aid % 86400) * interval '1 second');
END;
SQL
  "$PG_BIN/pgbench" -n -c 1 -t "$PG_TXNS" --random-seed=42 "${PGCONN[@]}" \
    -D naccounts=$((PG_SCALE * 100000)) -D nbranches="$PG_SCALE" -D ntellers=$((PG_SCALE * 10)) \
    -f "$BENCH_DIR/tpcb-det.sql" bench > "$BENCH_DIR/pgbench-run.log" 2>&1 \
    || { cat "$BENCH_DIR/pgbench-run.log" >&2; die "pgbench run failed"; }
  { echo "UPDATE docs SET title = title || ' (revised)', body = body || ' ' || md5('day2-' || id) WHERE id % 100 = 42;"
    echo 'DELETE FROM docs WHERE id % 250 = 17;'
    docs_insert_sql $((DOC_ROWS + 1)) $((DOC_ROWS + DOC_ROWS / 100)); } | psql_bench
  "$PG_BIN/pg_dump" "${PGCONN[@]}" ${PGDUMP_OPTS[@]+"${PGDUMP_OPTS[@]}"} -d bench -f "$CORPUS/day2.sql.tmp"
  pg_stop
  mv "$CORPUS/day1.sql.tmp" "$CORPUS/day1.sql"
  mv "$CORPUS/day2.sql.tmp" "$CORPUS/day2.sql"
}

build_tree
build_tree2
build_dumps
corpus_stats() {
  python3 - "$CORPUS" <<'PY'
import json, os, sys
c = sys.argv[1]
def walk(d):
    n = b = 0
    for root, dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                n += 1; b += os.path.getsize(p)
    return n, b
t = json.load(open(os.path.join(c, "tree.json")))
m = json.load(open(os.path.join(c, "tree2.json")))
n2 = t["files"] - m["removed"] + m["added"]
print(json.dumps({"tree_files": t["files"], "tree_bytes": t["bytes"], "tree_symlinks": t["symlinks"],
                  "tree_sources": t["sources"], "tree2_files": n2,
                  "tree2_bytes": walk(os.path.join(c, "tree2"))[1],
                  "tree2_mutation": m,
                  "day1_bytes": os.path.getsize(os.path.join(c, "day1.sql")),
                  "day2_bytes": os.path.getsize(os.path.join(c, "day2.sql"))}))
PY
}
CORPUS_STATS=$(corpus_stats)
log "corpus ready in $CORPUS: $(du -sh "$CORPUS/tree" | cut -f1) tree, $(du -sh "$CORPUS/day1.sql" | cut -f1) + $(du -sh "$CORPUS/day2.sql" | cut -f1) dumps"
if [ "$ACTION" = corpus ]; then exit 0; fi

# ----------------------------------------------------------------------------
# tools
# ----------------------------------------------------------------------------
have_tool() {
  case $1 in
    salvor) [ -x "$SALVOR_BIN" ] ;;
    borg) command -v borg >/dev/null ;;
    restic|rustic|bupstash) command -v "$1" >/dev/null ;;
    *) return 1 ;;
  esac
}
tool_version() {
  case $1 in
    salvor) "$SALVOR_BIN" --version 2>/dev/null | head -n1 || echo unknown ;;
    restic) restic version | head -n1 ;;
    borg) borg --version ;;
    rustic) rustic --version 2>/dev/null | head -n1 ;;
    bupstash) bupstash version 2>/dev/null | head -n1 ;;
  esac
}

# Per tool run: RUN_DIR holds repo/, cache, restore target and logs; everything is
# deleted afterwards. Only REPO counts towards the repository size.
setup_env() { # $1 tool
  export XDG_CACHE_HOME=$RUN_DIR/cache XDG_CONFIG_HOME=$RUN_DIR/config
  mkdir -p "$XDG_CACHE_HOME" "$XDG_CONFIG_HOME"
  REPO=$RUN_DIR/repo
  case $1 in
    salvor) export SALVOR_REPO=$REPO SALVOR_PASSWORD=$BENCH_PASSWORD ;;
    restic) export RESTIC_REPOSITORY=$REPO RESTIC_PASSWORD=$BENCH_PASSWORD RESTIC_CACHE_DIR=$RUN_DIR/cache/restic ;;
    borg) export BORG_REPO=$REPO BORG_PASSPHRASE=$BENCH_PASSWORD BORG_BASE_DIR=$RUN_DIR/borg-home \
                 BORG_RELOCATED_REPO_ACCESS_IS_OK=yes ;;
    rustic) export RUSTIC_REPOSITORY=$REPO RUSTIC_PASSWORD=$BENCH_PASSWORD RUSTIC_CACHE_DIR=$RUN_DIR/cache/rustic ;;
    bupstash) export BUPSTASH_REPOSITORY=$REPO BUPSTASH_KEY=$RUN_DIR/bupstash.key \
                     BUPSTASH_QUERY_CACHE=$RUN_DIR/cache/bupstash.qcache ;;
  esac
}
clear_env() {
  unset SALVOR_REPO SALVOR_PASSWORD RESTIC_REPOSITORY RESTIC_PASSWORD RESTIC_CACHE_DIR \
        BORG_REPO BORG_PASSPHRASE BORG_BASE_DIR BORG_RELOCATED_REPO_ACCESS_IS_OK \
        RUSTIC_REPOSITORY RUSTIC_PASSWORD RUSTIC_CACHE_DIR \
        BUPSTASH_REPOSITORY BUPSTASH_KEY BUPSTASH_QUERY_CACHE XDG_CACHE_HOME XDG_CONFIG_HOME
}

repo_bytes() { if [ -e "$REPO" ]; then du -sb "$REPO" | cut -f1; else echo 0; fi; }

# measure STEP CMD... — runs CMD under GNU time; M_IN / M_OUT / M_CWD (optional)
# redirect stdin / stdout / set the working directory. Appends one line to RAW.
M_IN="" M_OUT="" M_CWD="" STEP_VERIFY=""
measure() {
  local step=$1; shift
  local tf=$RUN_DIR/time.$step lg=$RUN_DIR/log.$step rc=0 before after
  before=$(repo_bytes)
  (
    if [ -n "$M_CWD" ]; then cd "$M_CWD"; fi
    if [ -n "$M_OUT" ]; then
      exec "$TIME_BIN" -f '%e %U %S %M' -o "$tf" "$@" < "${M_IN:-/dev/null}" > "$M_OUT" 2> "$lg"
    else
      exec "$TIME_BIN" -f '%e %U %S %M' -o "$tf" "$@" < "${M_IN:-/dev/null}" > "$lg" 2>&1
    fi
  ) || rc=$?
  after=$(repo_bytes)
  M_IN="" M_OUT="" M_CWD=""
  if [ "$rc" = 1 ] && [ "$CUR_TOOL" = borg ]; then rc=0; fi   # borg: 1 = warning
  local wall user sys rss
  read -r wall user sys rss < <(tail -n1 "$tf")
  LAST_RC=$rc
  if [ "$rc" != 0 ]; then
    log "  $CUR_TOOL $step FAILED (rc=$rc): $*"
    tail -n 15 "$lg" | sed 's/^/    | /' >&2
  else
    log "  $(printf '%-9s %-15s' "$CUR_TOOL" "$step") wall ${wall}s cpu $(echo "$user $sys" | awk '{print $1+$2}')s rss $((rss / 1024))MiB repo $((after / 1048576))MiB"
  fi
  PENDING_ROW=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$CUR_TOOL" "$CUR_RUN" "$step" "$wall" "$user" "$sys" "$rss" "$before" "$after" "$rc")
}
emit_row() { printf '%s\t%s\n' "$PENDING_ROW" "$STEP_VERIFY" >> "$RAW"; STEP_VERIFY=""; }

# run_step TOOL STEP — the tool-specific command for a step
TREE_SNAP_NAME=""   # borg archive / bupstash tag of the latest tree backup
DUMP_SNAP_NAME=""
run_step() {
  local t=$1 s=$2 tag
  case $s in
    tree-first) tag=tree1 ;; tree-unchanged) tag=tree2 ;; tree-changed) tag=tree3 ;;
    dump-day1) tag=day1 ;; dump-day2) tag=day2 ;; *) tag="" ;;
  esac
  case $s in
    tree-*) TREE_SNAP_NAME=$tag ;;
    dump-day*) DUMP_SNAP_NAME=$tag; M_IN=$CORPUS/$tag.sql ;;
    restore-tree) rm -rf "$RUN_DIR/restore"; mkdir -p "$RUN_DIR/restore" ;;
    restore-dump) M_OUT=$RUN_DIR/restored-$STDIN_NAME ;;
  esac
  case $t:$s in
    salvor:init)         measure "$s" "$SALVOR_BIN" init ;;
    salvor:tree-*)       measure "$s" "$SALVOR_BIN" backup "$LIVE" ;;
    salvor:dump-day*)    measure "$s" "$SALVOR_BIN" backup --stdin --stdin-name "$STDIN_NAME" ;;
    salvor:restore-tree) measure "$s" "$SALVOR_BIN" restore latest --target "$RUN_DIR/restore" ;;
    salvor:restore-dump) measure "$s" "$SALVOR_BIN" dump latest "$STDIN_NAME" ;;

    restic:init)         measure "$s" restic init --repository-version "$RESTIC_REPO_VERSION" ;;
    restic:tree-*)       measure "$s" restic backup "$LIVE" ;;
    restic:dump-day*)    measure "$s" restic backup --stdin --stdin-filename "$STDIN_NAME" ;;
    restic:restore-tree) measure "$s" restic restore latest --path "$LIVE" --target "$RUN_DIR/restore" ;;
    restic:restore-dump) measure "$s" restic dump --path "/$STDIN_NAME" latest "/$STDIN_NAME" ;;

    borg:init)           measure "$s" borg init --encryption="$BORG_ENCRYPTION" ;;
    borg:tree-*)         measure "$s" borg create "::$tag" "$LIVE" ;;
    borg:dump-day*)      measure "$s" borg create --stdin-name "$STDIN_NAME" "::$tag" - ;;
    borg:restore-tree)   M_CWD=$RUN_DIR/restore; measure "$s" borg extract "::$TREE_SNAP_NAME" ;;
    borg:restore-dump)   measure "$s" borg extract --stdout "::$DUMP_SNAP_NAME" "$STDIN_NAME" ;;

    rustic:init)         measure "$s" rustic init ;;
    rustic:tree-*)       measure "$s" rustic backup "$LIVE" ;;
    # --force: otherwise rustic treats a repeated stdin backup as unchanged vs its parent
    rustic:dump-day*)    measure "$s" rustic backup --force --stdin-filename "$STDIN_NAME" - ;;
    rustic:restore-tree) measure "$s" rustic restore --filter-paths "$LIVE" latest "$RUN_DIR/restore" ;;
    rustic:restore-dump) measure "$s" rustic dump --filter-paths "$STDIN_NAME" "latest:$STDIN_NAME" ;;

    bupstash:init)       bupstash new-key -o "$BUPSTASH_KEY" >/dev/null; measure "$s" bupstash init ;;
    # one send log per job, as bupstash's docs ask for incremental puts
    bupstash:tree-*)     measure "$s" bupstash put --send-log "$RUN_DIR/cache/tree.sendlog" "bench=$tag" "$LIVE" ;;
    bupstash:dump-day*)  measure "$s" bupstash put --send-log "$RUN_DIR/cache/dump.sendlog" "bench=$tag" "name=$STDIN_NAME" - ;;
    bupstash:restore-tree) measure "$s" bupstash restore --into "$RUN_DIR/restore" "bench=$TREE_SNAP_NAME" ;;
    bupstash:restore-dump) measure "$s" bupstash get "bench=$DUMP_SNAP_NAME" ;;
    *) die "no command for $t:$s" ;;
  esac
}

verify_step() { # after a restore step: compare with what was backed up last
  local s=$1
  [ "$LAST_RC" = 0 ] || { STEP_VERIFY=""; return; }
  case $s in
    restore-dump)
      if cmp -s "$RUN_DIR/restored-$STDIN_NAME" "$CORPUS/$DUMP_SNAP_NAME.sql"; then STEP_VERIFY=ok
      else STEP_VERIFY=FAIL; log "  VERIFY FAILED: restored dump differs from $DUMP_SNAP_NAME.sql"; fi
      rm -f "$RUN_DIR/restored-$STDIN_NAME" ;;
    restore-tree)
      [ "$VERIFY" = 1 ] || return 0
      local expect=$CORPUS/tree root=""
      [ "$TREE_SNAP_NAME" = tree3 ] && expect=$CORPUS/tree2
      # where the tool put it: T/<absolute path> (restic, borg, rustic), T itself (bupstash),
      # or wherever the first top-level entry of the tree turns up
      local cand first found
      first=$(cd "$expect" && find . -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | head -n1 || true)
      found=$(find "$RUN_DIR/restore" -maxdepth 12 -name "$first" -print -quit 2>/dev/null || true)
      for cand in "$RUN_DIR/restore$LIVE" "$RUN_DIR/restore/$(basename "$LIVE")" "${found%/*}" "$RUN_DIR/restore"; do
        if [ -n "$cand" ] && [ -d "$cand" ]; then root=$cand; break; fi
      done
      if diff -r --no-dereference -q "$expect" "$root" > "$RUN_DIR/verify.log" 2>&1; then STEP_VERIFY=ok
      else
        STEP_VERIFY=FAIL
        log "  VERIFY FAILED: restored tree ($root) differs from $(basename "$expect"):"
        head -n 10 "$RUN_DIR/verify.log" | sed 's/^/    | /' >&2
      fi
      rm -rf "$RUN_DIR/restore" ;;
  esac
}

# steps to run = selected steps + their prerequisites, in canonical order
declare -A PREREQ=([tree-unchanged]=tree-first [tree-changed]=tree-first [restore-tree]=tree-first
                   [dump-day2]=dump-day1 [restore-dump]=dump-day1)
declare -A WANT=([init]=1)
IFS=, read -r -a sel_steps <<< "$STEPS"
for s in "${sel_steps[@]}"; do
  [[ ",$ALL_STEPS," == *",$s,"* ]] || die "unknown step '$s' (steps: $ALL_STEPS)"
  WANT[$s]=1; [ -n "${PREREQ[$s]:-}" ] && WANT[${PREREQ[$s]}]=1
done
RUN_STEPS=()
IFS=, read -r -a all_steps <<< "$ALL_STEPS"
for s in "${all_steps[@]}"; do [ -n "${WANT[$s]:-}" ] && RUN_STEPS+=("$s"); done

IFS=, read -r -a sel_tools <<< "$TOOLS"
NOTES=()
TOOLS_RUN=()
VERSIONS="{}"
for t in "${sel_tools[@]}"; do
  [[ ",$ALL_TOOLS," == *",$t,"* ]] || die "unknown tool '$t' (tools: $ALL_TOOLS)"
  if have_tool "$t"; then
    TOOLS_RUN+=("$t")
    VERSIONS=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]=sys.argv[3]; print(json.dumps(d))' \
      "$VERSIONS" "$t" "$(tool_version "$t" || echo unknown)")
  else
    if [ "$t" = salvor ]; then NOTES+=("salvor skipped: no executable at SALVOR_BIN (build it with cargo build --release)")
    else NOTES+=("$t skipped: not installed (run bench/run.sh --install)"); fi
    log "skipping $t: not installed"
  fi
done
[ ${#TOOLS_RUN[@]} -gt 0 ] || die "no tool to run"

mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$RESULTS_DIR/$STAMP-$MODE
RAW=$OUT.tsv
: > "$RAW"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "")
log "mode=$MODE runs=$RUNS tools=${TOOLS_RUN[*]} steps=${RUN_STEPS[*]} work dir=$BENCH_DIR"

for t in "${TOOLS_RUN[@]}"; do
  for ((run = 1; run <= RUNS; run++)); do
    CUR_TOOL=$t CUR_RUN=$run
    RUN_DIR=$BENCH_DIR/runs/$t
    rm -rf "$RUN_DIR"; mkdir -p "$RUN_DIR"
    # the backed-up path always starts as an exact copy of tree
    rsync -a --delete "$CORPUS/tree/" "$LIVE/"
    setup_env "$t"
    TREE_SNAP_NAME="" DUMP_SNAP_NAME=""
    log "$t run $run/$RUNS"
    for s in "${RUN_STEPS[@]}"; do
      if [ "$s" = tree-changed ]; then
        # tree2 is synced over the same path: unchanged files keep inode/mtime/ctime,
        # so the tools' parent/files-cache detection works like on a real machine
        rsync -a --delete "$CORPUS/tree2/" "$LIVE/"
      fi
      LAST_RC=0
      run_step "$t" "$s"
      verify_step "$s"
      emit_row
      if [ "$LAST_RC" != 0 ]; then
        NOTES+=("$t run $run: step $s failed (rc=$LAST_RC); remaining steps skipped; log kept in $RUN_DIR")
        break
      fi
    done
    if [ "$t" = salvor ] && [ "$LAST_RC" = 0 ]; then
      # untimed sanity check of the CLI contract: `salvor snapshots --json` lists what was made
      n_backups=0
      for s in "${RUN_STEPS[@]}"; do case $s in tree-*|dump-day*) n_backups=$((n_backups + 1)) ;; esac; done
      if "$SALVOR_BIN" snapshots --json > "$RUN_DIR/snapshots.json" 2> "$RUN_DIR/log.snapshots" &&
         n_snaps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d=d.get("snapshots", d) if isinstance(d, dict) else d; print(len(d))' "$RUN_DIR/snapshots.json" 2>/dev/null); then
        [ "$n_snaps" = "$n_backups" ] || NOTES+=("salvor run $run: snapshots --json lists $n_snaps snapshots, expected $n_backups")
      else
        NOTES+=("salvor run $run: 'salvor snapshots --json' failed or did not print a JSON list")
      fi
    fi
    clear_env
    if [ "$KEEP" = 0 ] && [ "$LAST_RC" = 0 ]; then rm -rf "$RUN_DIR"; fi
  done
done

NOTES_JSON=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' ${NOTES[@]+"${NOTES[@]}"})
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "")
python3 - "$OUT.meta.json" "$MODE" "$RUNS" "$CORPUS_STATS" "$VERSIONS" "$NOTES_JSON" "$STAMP" "$LOAD_START" "$LOAD_END" <<'PY'
import json, os, sys
out, mode, runs, corpus, versions, notes, stamp, load_start, load_end = sys.argv[1:]
mem = 0
try:
    for l in open("/proc/meminfo"):
        if l.startswith("MemTotal:"): mem = int(l.split()[1]) * 1024
except OSError:
    pass
json.dump({"mode": mode, "runs": int(runs), "timestamp": stamp, "cpus": os.cpu_count(), "mem_bytes": mem,
           "loadavg_start": load_start, "loadavg_end": load_end,
           "corpus": json.loads(corpus), "versions": json.loads(versions), "notes": json.loads(notes),
           "settings": {"restic_repository_version": os.environ.get("RESTIC_REPO_VERSION", "2"),
                        "borg_encryption": os.environ.get("BORG_ENCRYPTION", "repokey"),
                        "stdin_name": "dump.sql"}}, open(out, "w"), indent=1)
PY
STEPS_REPORT=$(IFS=,; echo "${sel_steps[*]}")
echo
python3 "$SCRIPT_DIR/report.py" --raw "$RAW" --meta "$OUT.meta.json" \
  --tools "$(IFS=,; echo "${TOOLS_RUN[*]}")" --steps "$STEPS_REPORT" --json "$OUT.json" --md "$OUT.md"
cp "$OUT.md" "$RESULTS_DIR/latest-$MODE.md"
cp "$OUT.json" "$RESULTS_DIR/latest-$MODE.json"
echo
log "results: $OUT.md, $OUT.json (raw: $RAW)"
