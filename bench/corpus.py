#!/usr/bin/env python3
"""Deterministic file-tree corpora for bench/run.sh.

  corpus.py tree   --out DIR --bytes N --files N SRC[=CAP] ...
      Copy regular files (and symlinks, as links) from each SRC into
      DIR/<label-of-SRC>/..., walking every source in sorted (byte) order.
      A file that would overflow the source's byte cap (CAP, default: whatever
      is left of --bytes) is skipped; a source stops once it is 99% full, and
      everything stops at the global --files cap. Budget a source
      leaves unused carries over to the next one. Unreadable and special files
      are skipped. Modes and mtimes are preserved.

  corpus.py mutate --dir DIR --seed 42 --fraction 0.02
      Modify/add/remove ~fraction of the regular files of DIR in place,
      deterministically (random.Random(seed) over the sorted file list).
      Touched files and directories get fixed mtimes, so the result does not
      depend on when it was built.

Both commands print a JSON summary on stdout.
"""
import argparse
import json
import os
import random
import shutil
import stat
import string
import sys

FIXED_MTIME = 1_700_000_000  # 2023-11-14, arbitrary but fixed


def label_for(src):
    src = os.path.normpath(src)
    home = os.path.expanduser("~")
    if src.startswith(home + os.sep):
        src = "home" + src[len(home):]
    return src.strip(os.sep).replace(os.sep, "-") or "root"


def walk_sorted(top):
    """Yield (abs_path, rel_path, lstat) for entries under top, sorted, no symlink following."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(top, rel_dir) if rel_dir else top
        try:
            names = sorted(os.listdir(abs_dir), key=os.fsencode)
        except OSError:
            continue
        subdirs = []
        for name in names:
            rel = os.path.join(rel_dir, name) if rel_dir else name
            p = os.path.join(top, rel)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
                yield p, rel, st
            else:
                yield p, rel, st
        # depth-first, in sorted order
        stack.extend(reversed(subdirs))


def copy_file(src, dst, st):
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
    os.chmod(dst, stat.S_IMODE(st.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def cmd_tree(a):
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    total_bytes = 0
    total_files = 0
    total_links = 0
    per_source = []
    left = a.bytes
    specs = []
    for s in a.sources:
        if "=" in s:
            path, cap = s.rsplit("=", 1)
            specs.append((path, int(float(cap))))
        else:
            specs.append((s, None))
    carry = 0
    files_full = False
    for path, cap in specs:
        path = os.path.expanduser(path)
        budget = (cap + carry) if cap is not None else left
        budget = min(budget, left)
        used = 0
        nfiles = 0
        label = label_for(path)
        if not os.path.isdir(path) or files_full:
            per_source.append({"source": path, "label": label, "bytes": 0, "files": 0, "missing": not os.path.isdir(path)})
            carry = budget
            continue
        dst_top = os.path.join(out, label)
        os.makedirs(dst_top, exist_ok=True)
        dir_times = []
        stopped = False
        for p, rel, st in walk_sorted(path):
            dst = os.path.join(dst_top, rel)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                try:
                    os.makedirs(dst, exist_ok=True)
                except OSError:
                    continue
                dir_times.append((dst, st))
            elif stat.S_ISLNK(mode):
                try:
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    os.symlink(os.readlink(p), dst)
                    total_links += 1
                except OSError:
                    pass
            elif stat.S_ISREG(mode):
                if total_files + 1 > a.files:
                    stopped = files_full = True
                    break
                if used + st.st_size > budget:
                    # skip a file that does not fit; stop once the source is (nearly) full
                    stopped = True
                    if used >= 0.99 * budget:
                        break
                    continue
                try:
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    copy_file(p, dst, st)
                except OSError:
                    try:
                        os.unlink(dst)
                    except OSError:
                        pass
                    continue
                used += st.st_size
                nfiles += 1
                total_files += 1
            # sockets, fifos, devices: skipped
        # directory mtimes last (children changed them), deepest first
        for dst, st in reversed(dir_times):
            try:
                os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            except OSError:
                pass
        total_bytes += used
        left -= used
        carry = budget - used
        per_source.append({"source": path, "label": label, "bytes": used, "files": nfiles, "truncated": stopped})
    json.dump({"bytes": total_bytes, "files": total_files, "symlinks": total_links, "sources": per_source}, sys.stdout, indent=1)
    print()


def text_bytes(rng, n):
    alphabet = string.ascii_letters + string.digits + "      \n"
    return "".join(rng.choices(alphabet, k=n)).encode()


def cmd_mutate(a):
    top = os.path.abspath(a.dir)
    rng = random.Random(a.seed)
    files = []
    dirs = []
    for p, rel, st in walk_sorted(top):
        if stat.S_ISREG(st.st_mode):
            files.append((rel, st.st_size))
        elif stat.S_ISDIR(st.st_mode):
            dirs.append(rel)
    n = len(files)
    k_mod = round(n * a.fraction * 0.6)
    k_del = round(n * a.fraction * 0.2)
    k_add = round(n * a.fraction * 0.2)
    picked = rng.sample(range(n), k_mod + k_del)
    mod_idx, del_idx = picked[:k_mod], picked[k_mod:]
    touched_dirs = set()
    stats = {"files_before": n, "modified": 0, "removed": 0, "added": 0,
             "bytes_written": 0, "bytes_removed": 0, "ops": {}}
    t = FIXED_MTIME
    for i in sorted(mod_idx):
        rel, size = files[i]
        p = os.path.join(top, rel)
        with open(p, "rb") as f:
            data = f.read()
        op = rng.choice(["insert", "append", "overwrite", "truncate"])
        ln = rng.randint(16, 4096)
        if op == "insert":
            off = rng.randint(0, len(data))
            new = data[:off] + text_bytes(rng, ln) + data[off:]
        elif op == "append":
            new = data + text_bytes(rng, ln)
        elif op == "overwrite":
            off = rng.randint(0, len(data))
            new = data[:off] + text_bytes(rng, ln) + data[off + ln:]
        else:  # truncate: drop a tail (or the whole thing for tiny files)
            keep = rng.randint(0, len(data))
            new = data[:keep]
        # write through a temp file + rename, like most editors/package managers do
        tmp = p + ".salvor-bench-tmp"
        with open(tmp, "wb") as f:
            f.write(new)
        os.chmod(tmp, os.stat(p).st_mode & 0o7777)
        os.replace(tmp, p)
        t += 1
        os.utime(p, (t, t))
        touched_dirs.add(os.path.dirname(p))
        stats["modified"] += 1
        stats["bytes_written"] += len(new)
        stats["ops"][op] = stats["ops"].get(op, 0) + 1
    for i in sorted(del_idx):
        rel, size = files[i]
        p = os.path.join(top, rel)
        os.unlink(p)
        touched_dirs.add(os.path.dirname(p))
        stats["removed"] += 1
        stats["bytes_removed"] += size
    for j in range(k_add):
        d = os.path.join(top, dirs[rng.randrange(len(dirs))]) if dirs else top
        if not os.path.isdir(d):
            d = top
        src_rel, src_size = files[rng.randrange(n)]
        src = os.path.join(top, src_rel)
        if rng.random() < 0.5 and os.path.exists(src):
            # a copy of an existing file with a small edit (copied/renamed file)
            with open(src, "rb") as f:
                data = f.read()
            off = rng.randint(0, len(data))
            data = data[:off] + text_bytes(rng, rng.randint(1, 256)) + data[off:]
        else:
            data = text_bytes(rng, min(src_size, 4 << 20))
        p = os.path.join(d, "salvor-bench-added-%05d.txt" % j)
        with open(p, "wb") as f:
            f.write(data)
        t += 1
        os.utime(p, (t, t))
        touched_dirs.add(d)
        stats["added"] += 1
        stats["bytes_written"] += len(data)
    for d in sorted(touched_dirs):
        os.utime(d, (FIXED_MTIME, FIXED_MTIME))
    json.dump(stats, sys.stdout, indent=1)
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tree")
    t.add_argument("--out", required=True)
    t.add_argument("--bytes", type=lambda s: int(float(s)), required=True)
    t.add_argument("--files", type=int, default=10**9)
    t.add_argument("sources", nargs="+")
    m = sub.add_parser("mutate")
    m.add_argument("--dir", required=True)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--fraction", type=float, default=0.02)
    a = ap.parse_args()
    {"tree": cmd_tree, "mutate": cmd_mutate}[a.cmd](a)


if __name__ == "__main__":
    main()
