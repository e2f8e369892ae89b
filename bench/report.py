#!/usr/bin/env python3
"""Aggregate bench/run.sh measurements into a Markdown table + JSON.

  report.py --raw RAW.tsv --meta META.json --tools a,b --steps x,y \
            --json OUT.json --md OUT.md

RAW.tsv columns (tab separated, one line per tool/run/step):
  tool run step wall_s user_s sys_s maxrss_kib repo_before_b repo_after_b rc verify
"""
import argparse
import json
import statistics
import sys

MiB = 1024 * 1024
PEER_TOOLS = ["restic", "borg", "rustic", "bupstash"]
STEP_TITLES = {
    "init": "init",
    "tree-first": "first tree backup",
    "tree-unchanged": "unchanged re-backup",
    "tree-changed": "changed-tree backup (tree2)",
    "restore-tree": "restore latest tree",
    "dump-day1": "stdin backup dump day 1",
    "dump-day2": "stdin backup dump day 2",
    "restore-dump": "restore latest dump (to file)",
}


def load_raw(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            p = line.split("\t")
            rows.append({
                "tool": p[0], "run": int(p[1]), "step": p[2],
                "wall_s": float(p[3]), "user_s": float(p[4]), "sys_s": float(p[5]),
                "cpu_s": float(p[4]) + float(p[5]),
                "maxrss_mib": int(p[6]) / 1024.0,
                "repo_before_b": int(p[7]), "repo_after_b": int(p[8]),
                "added_b": int(p[8]) - int(p[7]),
                "rc": int(p[9]), "verify": p[10] if len(p) > 10 else "",
            })
    return rows


def aggregate(rows):
    by = {}
    for r in rows:
        by.setdefault((r["tool"], r["step"]), []).append(r)
    agg = {}
    for (tool, step), rs in by.items():
        ok = [r for r in rs if r["rc"] == 0]
        use = ok or rs
        a = {"runs": len(rs), "failed_runs": len(rs) - len(ok)}
        for k in ("wall_s", "cpu_s", "user_s", "sys_s", "maxrss_mib", "repo_after_b", "added_b"):
            a[k] = statistics.median([r[k] for r in use])
        v = sorted({r["verify"] for r in rs if r["verify"]})
        a["verify"] = ",".join(v)
        agg.setdefault(tool, {})[step] = a
    return agg


def fmt_cell(a):
    if a is None:
        return "–"
    s = "%.2f / %.2f / %.0f / %.0f" % (a["wall_s"], a["cpu_s"], a["maxrss_mib"], a["repo_after_b"] / MiB)
    if a["failed_runs"]:
        s += " **FAILED(%d)**" % a["failed_runs"]
    if a["verify"] and a["verify"] != "ok":
        s += " **verify:%s**" % a["verify"]
    return s


def best_peer(agg, step, key, peers):
    vals = [(agg[t][step][key], t) for t in peers
            if step in agg.get(t, {}) and agg[t][step]["failed_runs"] < agg[t][step]["runs"]]
    return min(vals) if vals else None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--steps", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--md", required=True)
    a = ap.parse_args()

    rows = load_raw(a.raw)
    meta = json.load(open(a.meta))
    agg = aggregate(rows)
    tools = [t for t in a.tools.split(",") if t in agg]
    steps = [s for s in a.steps.split(",") if any(s in agg.get(t, {}) for t in tools)]
    peers = [t for t in tools if t != "salvor"]
    have_salvor = "salvor" in tools

    out = []
    out.append("## salvor bench: %s corpus, median of %s run(s)" % (meta.get("mode", "?"), meta.get("runs", "?")))
    out.append("")
    c = meta.get("corpus", {})
    if c:
        out.append("Corpus: tree %s files / %.0f MiB; tree2 %s files / %.0f MiB; dump day1 %.0f MiB, day2 %.0f MiB." % (
            c.get("tree_files", "?"), c.get("tree_bytes", 0) / MiB,
            c.get("tree2_files", "?"), c.get("tree2_bytes", 0) / MiB,
            c.get("day1_bytes", 0) / MiB, c.get("day2_bytes", 0) / MiB))
        out.append("")
    out.append("Each cell: **wall s / CPU s (user+sys) / peak RSS MiB / repo MiB after the step**.")
    if have_salvor and peers:
        out.append("Last column: salvor vs best peer — time = best peer wall / salvor wall (>1: salvor faster), "
                   "size = salvor repo / smallest peer repo (<1: salvor smaller).")
    out.append("")
    hdr = ["step"] + tools + (["salvor vs best peer"] if have_salvor and peers else [])
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---"] * len(hdr)) + "|")
    for s in steps:
        cells = [STEP_TITLES.get(s, s)]
        for t in tools:
            cells.append(fmt_cell(agg.get(t, {}).get(s)))
        if have_salvor and peers and s == "init":
            cells.append("–")
        elif have_salvor and peers:
            sv = agg.get("salvor", {}).get(s)
            bt = best_peer(agg, s, "wall_s", peers)
            bs = best_peer(agg, s, "repo_after_b", peers)
            parts = []
            if sv and bt:
                parts.append("time x%.2f (%s)" % (bt[0] / sv["wall_s"] if sv["wall_s"] else float("inf"), bt[1]))
            if sv and bs and bs[0]:
                parts.append("size x%.2f (%s)" % (sv["repo_after_b"] / bs[0], bs[1]))
            cells.append(", ".join(parts) or "–")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")

    # bytes added to the repository by each step
    out.append("Repository growth per step (MiB added by the step):")
    out.append("")
    hdr2 = ["step"] + tools
    out.append("| " + " | ".join(hdr2) + " |")
    out.append("|" + "|".join(["---"] * len(hdr2)) + "|")
    for s in steps:
        cells = [STEP_TITLES.get(s, s)]
        for t in tools:
            x = agg.get(t, {}).get(s)
            cells.append("–" if x is None else "%.1f" % (x["added_b"] / MiB))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")

    # targets from the issue
    targets = evaluate_targets(agg, peers) if have_salvor else []
    out.append("### Targets (from the issue)")
    out.append("")
    if not have_salvor:
        out.append("_salvor not measured in this run; targets not evaluated._")
        out.append("")
    for name, status, detail in (targets or [(n, None, "") for n in TARGET_NAMES]):
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[status]
        if have_salvor:
            out.append("- [%s] %s%s" % (mark, name, (" — " + detail) if detail else ""))
        else:
            out.append("- %s" % name)
    out.append("")
    ver = [(r["tool"], r["run"], r["step"], r["verify"]) for r in rows if r["verify"]]
    bad = [v for v in ver if v[3] != "ok"]
    if ver:
        out.append("Restores verified against the corpus (diff -r / cmp): %s" % (
            "all %d ok" % len(ver) if not bad else "**FAILED: %s**" % ", ".join("%s run %d %s" % v[:3] for v in bad)))
        out.append("")
    notes = list(meta.get("notes") or [])
    try:
        l1 = float((meta.get("loadavg_start") or "0").split()[0])
        l2 = float((meta.get("loadavg_end") or "0").split()[0])
        if meta.get("cpus") and max(l1, l2) > 0.5 * meta["cpus"]:
            notes.append("1-min load average was %.2f at start and %.2f at the end on %d CPUs (includes this run's own load): "
                         "timings may be noisy" % (l1, l2, meta["cpus"]))
    except ValueError:
        pass
    if meta.get("versions"):
        notes.append("versions: " + "; ".join("%s: %s" % kv for kv in meta["versions"].items()))
    if notes:
        out.append("Notes:")
        out.append("")
        for n in notes:
            out.append("- " + n)
        out.append("")

    md = "\n".join(out)
    open(a.md, "w").write(md)
    json.dump({"meta": meta, "tools": tools, "steps": steps, "median": agg, "raw": rows,
               "targets": [{"target": n, "pass": st, "detail": d} for n, st, d in targets]},
              open(a.json, "w"), indent=1)
    sys.stdout.write(md)


TARGET_NAMES = [
    "first tree backup >= 1.5x faster than fastest peer",
    "first tree backup: repo no larger than smallest peer's",
    "unchanged re-backup >= 1.2x faster than fastest peer",
    "changed-tree backup faster than every peer",
    "changed-tree backup adds no more than restic adds",
    "restore tree >= 1.5x faster than fastest peer",
    "restore dump >= 1.5x faster than fastest peer",
    "stream (stdin) backup >= 1.5x faster than fastest peer (day 1 and day 2)",
    "stream (stdin) backup peak RSS < 100 MiB",
    "day-2 dump adds <= 60% of what the best peer adds",
    "day-1 dump stored no larger than best peer",
    "peak RSS <= half of restic's in every step",
]


def evaluate_targets(agg, peers):
    S = agg.get("salvor", {})
    res = []

    def speed(step, factor, name):
        sv = S.get(step)
        bt = best_peer(agg, step, "wall_s", peers)
        if not sv or not bt:
            res.append((name, None, "not measured"))
            return
        r = bt[0] / sv["wall_s"] if sv["wall_s"] else float("inf")
        good = sv["verify"] in ("", "ok")
        res.append((name, r >= factor and not sv["failed_runs"] and good,
                    "x%.2f vs %s (%.2fs vs %.2fs)%s" % (r, bt[1], sv["wall_s"], bt[0], "" if good else ", restore verify FAILED")))

    speed("tree-first", 1.5, TARGET_NAMES[0])
    sv, bs = S.get("tree-first"), best_peer(agg, "tree-first", "repo_after_b", peers)
    if sv and bs:
        res.append((TARGET_NAMES[1], sv["repo_after_b"] <= bs[0],
                    "%.2f MiB vs %.2f MiB (%s)" % (sv["repo_after_b"] / MiB, bs[0] / MiB, bs[1])))
    else:
        res.append((TARGET_NAMES[1], None, "not measured"))
    speed("tree-unchanged", 1.2, TARGET_NAMES[2])
    sv = S.get("tree-changed")
    pv = [(agg[t]["tree-changed"]["wall_s"], t) for t in peers if "tree-changed" in agg.get(t, {})]
    if sv and pv:
        res.append((TARGET_NAMES[3], all(sv["wall_s"] < w for w, _ in pv),
                    "salvor %.2fs; peers: %s" % (sv["wall_s"], ", ".join("%s %.2fs" % (t, w) for w, t in pv))))
    else:
        res.append((TARGET_NAMES[3], None, "not measured"))
    rc = agg.get("restic", {}).get("tree-changed")
    if sv and rc:
        res.append((TARGET_NAMES[4], sv["added_b"] <= rc["added_b"],
                    "%.2f MiB vs restic %.2f MiB" % (sv["added_b"] / MiB, rc["added_b"] / MiB)))
    else:
        res.append((TARGET_NAMES[4], None, "needs salvor and restic"))
    speed("restore-tree", 1.5, TARGET_NAMES[5])
    speed("restore-dump", 1.5, TARGET_NAMES[6])
    # stream backup: both stdin steps
    parts, ok, seen = [], True, False
    for st in ("dump-day1", "dump-day2"):
        sv, bt = S.get(st), best_peer(agg, st, "wall_s", peers)
        if sv and bt:
            seen = True
            r = bt[0] / sv["wall_s"] if sv["wall_s"] else float("inf")
            ok = ok and r >= 1.5
            parts.append("%s x%.2f vs %s" % (st, r, bt[1]))
    res.append((TARGET_NAMES[7], ok if seen else None, "; ".join(parts) or "not measured"))
    parts, ok, seen = [], True, False
    for st in ("dump-day1", "dump-day2"):
        sv = S.get(st)
        if sv:
            seen = True
            ok = ok and sv["maxrss_mib"] < 100
            parts.append("%s %.0f MiB" % (st, sv["maxrss_mib"]))
    res.append((TARGET_NAMES[8], ok if seen else None, "; ".join(parts) or "not measured"))
    sv, bs = S.get("dump-day2"), best_peer(agg, "dump-day2", "added_b", peers)
    if sv and bs:
        res.append((TARGET_NAMES[9], sv["added_b"] <= 0.6 * bs[0],
                    "%.2f MiB vs %.2f MiB (%s) = %.0f%%" % (sv["added_b"] / MiB, bs[0] / MiB, bs[1],
                                                           100.0 * sv["added_b"] / bs[0] if bs[0] else float("inf"))))
    else:
        res.append((TARGET_NAMES[9], None, "not measured"))
    sv, bs = S.get("dump-day1"), best_peer(agg, "dump-day1", "added_b", peers)
    if sv and bs:
        res.append((TARGET_NAMES[10], sv["added_b"] <= bs[0],
                    "%.2f MiB vs %.2f MiB (%s)" % (sv["added_b"] / MiB, bs[0] / MiB, bs[1])))
    else:
        res.append((TARGET_NAMES[10], None, "not measured"))
    R = agg.get("restic", {})
    parts, ok, seen = [], True, False
    for st, sv in S.items():
        if st in R:
            seen = True
            good = sv["maxrss_mib"] <= 0.5 * R[st]["maxrss_mib"]
            ok = ok and good
            if not good:
                parts.append("%s: %.0f vs restic %.0f MiB" % (st, sv["maxrss_mib"], R[st]["maxrss_mib"]))
    res.append((TARGET_NAMES[11], ok if seen else None,
                ("; ".join(parts) if parts else ("all steps ok" if seen else "needs salvor and restic"))))
    return res


if __name__ == "__main__":
    main()
