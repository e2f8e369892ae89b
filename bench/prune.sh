#!/usr/bin/env bash
# Prune at scale beside restic: the same 1,000 daily dumps go into a salvor
# and a restic repository; half the snapshots are forgotten, then each
# tool's prune is timed (wall clock, peak RSS from /usr/bin/time).
#
# A day's dump is BASE bytes of text of which one REGION-byte stretch,
# different each day, is new: ~4 GB of unique data over 1,000 days, which
# salvor's 4 KiB stream chunks make about a million blobs (restic's 1 MiB
# chunks make a few thousand of the same data).
#
#   bench/prune.sh [DAYS] [BASE_MB] [REGION_MB]     # defaults: 1000 8 4
# Needs: restic (apt), python3, /usr/bin/time; SALVOR_BIN (target/release/salvor).
set -euo pipefail
DAYS=${1:-1000}
BASE_MB=${2:-8}
REGION_MB=${3:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SALVOR=${SALVOR_BIN:-$ROOT/target/release/salvor}
WORK=${BENCH_DIR:-/dev/shm/salvor-bench}/prune-$DAYS-$BASE_MB-$REGION_MB
TIME_BIN=${TIME_BIN:-/usr/bin/time}
mkdir -p "$WORK"
export SALVOR_PASSWORD=bench RESTIC_PASSWORD=bench
export SALVOR_REPO=$WORK/salvor RESTIC_REPOSITORY=$WORK/restic
export SALVOR_CACHE_DIR=$WORK/salvor-cache RESTIC_CACHE_DIR=$WORK/restic-cache

# Day N's dump on stdout: the base with day N's region replaced.
gen() {
  python3 - "$1" "$BASE_MB" "$REGION_MB" "$WORK/base.txt" <<'PY'
import os, random, sys
day, base_mb, region_mb, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def text(seed, n):
    r = random.Random(seed)
    out, size = [], 0
    while size < n:
        line = f"INSERT INTO t VALUES ({r.getrandbits(40)}, '{r.randbytes(40).hex()}');\n"
        out.append(line); size += len(line)
    return "".join(out).encode()[:n]
if not os.path.exists(path):
    with open(path + ".tmp", "wb") as f:
        f.write(text(-1, base_mb << 20))
    os.rename(path + ".tmp", path)
base = open(path, "rb").read()
n = region_mb << 20
off = (day * 7919 * 4096) % (len(base) - n)
off = base.rfind(b"\n", 0, off) + 1
out = sys.stdout.buffer
out.write(base[:off]); out.write(text(day, n)); out.write(base[off + n:])
PY
}

if [ ! -f "$WORK/filled" ]; then
  rm -rf "$SALVOR_REPO" "$RESTIC_REPOSITORY" "$SALVOR_CACHE_DIR" "$RESTIC_CACHE_DIR"
  "$SALVOR" init -q
  restic init -q
  start=$(date +%s)
  for ((d = 0; d < DAYS; d++)); do
    gen "$d" >"$WORK/day.sql"
    "$SALVOR" backup -q --stdin --stdin-name db.sql <"$WORK/day.sql"
    restic backup -q --stdin --stdin-filename db.sql <"$WORK/day.sql" >/dev/null
    if ((d % 100 == 99)); then echo "day $((d + 1)) of $DAYS ($(($(date +%s) - start)) s)"; fi
  done
  rm -f "$WORK/day.sql"
  # Forget every other day: half the regions become garbage, spread over
  # the whole history, as a keep-daily/keep-weekly policy leaves it.
  "$SALVOR" snapshots --json | python3 -c '
import json, sys
for i, s in enumerate(json.load(sys.stdin)):
    if i % 2 == 0: print(s["id"])' >"$WORK/salvor-forget"
  restic snapshots --json | python3 -c '
import json, sys
for i, s in enumerate(json.load(sys.stdin)):
    if i % 2 == 0: print(s["id"])' >"$WORK/restic-forget"
  cp -a "$SALVOR_REPO" "$WORK/salvor.full"
  cp -a "$RESTIC_REPOSITORY" "$WORK/restic.full"
  touch "$WORK/filled"
fi

# Each run starts from the filled repositories.
rm -rf "$SALVOR_REPO" "$RESTIC_REPOSITORY"
cp -a "$WORK/salvor.full" "$SALVOR_REPO"
cp -a "$WORK/restic.full" "$RESTIC_REPOSITORY"
xargs "$SALVOR" forget -q <"$WORK/salvor-forget"
xargs restic forget -q <"$WORK/restic-forget" >/dev/null
blobs=$("$SALVOR" --json check | python3 -c 'import json,sys; print(json.load(sys.stdin)["blobs"])')
size() { du -sb "$1" | cut -f1; }
echo "salvor: $blobs blobs, $(ls "$SALVOR_REPO/snapshots" | wc -l) snapshots after forget, $(size "$SALVOR_REPO") bytes"
echo "restic: $(restic snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') snapshots after forget, $(size "$RESTIC_REPOSITORY") bytes"
measure() { # name, command...
  local name=$1; shift
  "$TIME_BIN" -f "%e %M" -o "$WORK/$name.time" "$@" >"$WORK/$name.log" 2>&1
  read -r wall rss <"$WORK/$name.time"
  echo "$name: ${wall} s, peak RSS $((rss / 1024)) MiB"
}
measure salvor-prune "$SALVOR" prune
measure restic-prune restic prune
echo "after: salvor $(size "$SALVOR_REPO") bytes, restic $(size "$RESTIC_REPOSITORY") bytes"
"$SALVOR" check -q && echo "salvor check: ok"
