#!/usr/bin/env bash
# The benchmark report: one script, one table in docs/benchmarks.md.
#
#   benches/run.sh                  # everything: Rust matrix, then the Python and Node benches
#   SECS=5 benches/run.sh           # longer measured window per row (default 3 s)
#   benches/run.sh --rust-only      # skip the bindings (they build release artifacts: minutes)
#   benches/run.sh --report-only    # rewrite the doc from the last run's target/bench-report
#
# Rust rows: `cargo bench -p cycles-core --bench throughput -- <args>` once per row (the exact
# command is in the row): decide and reserve+commit on the memory ledger and on SQLite with
# synchronous FULL and NORMAL, group commit off and on, at 1, 8 and 32 threads, plus the
# physical reference (a plain rusqlite insert+update transaction with the same synchronous
# setting) measured in the same run. Then a single-caller latency check (group commit off/on
# alternated, three rounds, median of the p50s), and instructions per operation under
# callgrind. Binding rows: benches/python/run.sh and benches/node/bench.mjs when they exist;
# each rewrites its own section of docs/benchmarks.md, and their figures also go into the main
# table.
#
# Only the part of docs/benchmarks.md between the `BEGIN benches/run.sh` and
# `END benches/run.sh` markers is rewritten; every other section is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${SECS:-3}"
DOC="${DOC:-docs/benchmarks.md}"
WARMUP="${WARMUP:-0.5}"
BINDINGS=1
MEASURE=1
case "${1:-}" in
--rust-only) BINDINGS=0 ;;
--report-only) MEASURE=0 ;;
"") ;;
*) echo "usage: benches/run.sh [--rust-only | --report-only]" >&2 && exit 2 ;;
esac

OUT=target/bench-report
mkdir -p "$OUT"
ROWS="$OUT/rows.jsonl"

if [ "$MEASURE" = 1 ]; then
: >"$ROWS"

load() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_model() { grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
{
    echo "nproc=$(nproc)"
    echo "cpu=$(cpu_model)"
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "kernel=$(uname -r)"
    echo "rustc=$(rustc --version)"
    echo "load_before=$(load)"
    echo "fs=$(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}')"
} >"$OUT/machine.env"

echo "building the throughput bench..." >&2
# Built once; every row runs this binary, so a source change mid-run cannot mix builds. The row
# shows the equivalent cargo command.
BIN="$(cargo bench -q -p cycles-core --bench throughput --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "throughput" and m.get("executable"):
        print(m["executable"])')"
[ -x "$BIN" ] || { echo "no throughput bench binary" >&2; exit 1; }

# One row: runs the bench with "$@" and appends {"cmd": ..., "result": {...}} to $ROWS.
row() {
    local args="$* --secs $SECS --warmup $WARMUP"
    local cmd="cargo bench -q -p cycles-core --bench throughput -- $args"
    echo "$cmd" >&2
    local line
    # shellcheck disable=SC2086
    line="$("$BIN" --bench $args | tail -1)"
    echo "  $line" >&2
    printf '{"cmd": "%s", "result": %s}\n' "$cmd" "$line" >>"$ROWS"
}

for threads in 1 8 32; do
    for sync in full normal; do
        row --op reference --sync "$sync" --threads "$threads"
    done
    for op in decide reserve+commit; do
        row --ledger memory --op "$op" --threads "$threads"
        for sync in full normal; do
            for gc in off on; do
                row --ledger sqlite --sync "$sync" --group-commit "$gc" --op "$op" --threads "$threads"
            done
        done
    done
done

# Single caller, group commit off and on alternated, so that a change in load hits both.
LAT="$OUT/latency.jsonl"
: >"$LAT"
for round in 1 2 3; do
    for sync in full normal; do
        for gc in off on; do
            args="--ledger sqlite --sync $sync --group-commit $gc --op reserve+commit --threads 1 --secs $SECS --warmup $WARMUP"
            echo "latency round $round: $args" >&2
            # shellcheck disable=SC2086
            "$BIN" --bench $args | tail -1 >>"$LAT"
        done
    done
done
# Instructions per operation (user space, one caller) under callgrind: independent of load and
# of the disk, so the CPU cost of the group-commit path can be compared exactly. Two runs of
# different lengths; their difference cancels the setup.
INS="$OUT/instructions.jsonl"
: >"$INS"
if [ "${CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
    for cfg in "--op reference --sync normal" \
        "--ledger memory --op reserve+commit" \
        "--ledger sqlite --sync normal --group-commit off --op reserve+commit" \
        "--ledger sqlite --sync normal --group-commit on --op reserve+commit" \
        "--ledger sqlite --sync normal --group-commit off --op decide" \
        "--ledger sqlite --sync normal --group-commit on --op decide"; do
        irs=()
        for n in 200 1200; do
            # shellcheck disable=SC2086
            ir="$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" --bench $cfg --threads 1 --ops $n 2>&1 >/dev/null |
                sed -n 's/.*Collected : \([0-9]*\).*/\1/p')"
            irs+=("$ir")
        done
        echo "callgrind $cfg: ${irs[*]}" >&2
        printf '{"cfg": "%s", "ir_200": %s, "ir_1200": %s}\n' "$cfg" "${irs[0]}" "${irs[1]}" >>"$INS"
    done
fi
echo "load_after_rust=$(load)" >>"$OUT/machine.env"

: >"$OUT/python.txt"
: >"$OUT/node.txt"
if [ "$BINDINGS" = 1 ] && [ -x benches/python/run.sh ]; then
    echo "running benches/python/run.sh..." >&2
    benches/python/run.sh >"$OUT/python.txt" || echo "benches/python/run.sh failed" >&2
fi
if [ "$BINDINGS" = 1 ] && [ -f benches/node/bench.mjs ]; then
    echo "building the Node addon (release) and running benches/node/bench.mjs..." >&2
    if npm ci --prefix cycles-node >&2 && npm run build --prefix cycles-node >&2; then
        node benches/node/bench.mjs --write "$DOC" >"$OUT/node.txt" || echo "bench.mjs failed" >&2
    else
        echo "the Node addon did not build" >&2
    fi
fi
echo "load_after=$(load)" >>"$OUT/machine.env"
fi

python3 - "$OUT" "$DOC" "$SECS" <<'PY'
import json
import statistics
import sys
from pathlib import Path

out, doc_path, secs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
env = dict(l.split("=", 1) for l in (out / "machine.env").read_text().splitlines() if "=" in l)
rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines() if l.strip()]
lat = [json.loads(l) for l in (out / "latency.jsonl").read_text().splitlines() if l.strip()]
ins = [json.loads(l) for l in (out / "instructions.jsonl").read_text().splitlines() if l.strip()]


def fmt_rate(x):
    return f"{x:,.0f}"


def fmt_us(x):
    if x is None or x != x:
        return "–"
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


ref = {}
for r in rows:
    res = r["result"]
    if res["op"] == "reference" and res["threads"] == 1:
        ref[res["sync"]] = res["ops_per_sec"]

MACHINE = "A"
lines = []
lines.append("<!-- BEGIN benches/run.sh: generated, do not edit by hand -->")
lines.append("## Throughput and latency (`benches/run.sh`)")
lines.append("")
lines.append(
    f"Machine **{MACHINE}**: {env['nproc']} × {env['cpu']} (`nproc` = {env['nproc']}), Linux "
    f"{env['kernel']}, {env['rustc']}, temp files on {env.get('fs', '?')}; run {env['date']}. "
    f"Load average (1/5/15 min) {env['load_before']} before the run, "
    f"{env.get('load_after_rust', '?')} after the Rust rows, {env.get('load_after', '?')} at the end. "
    "The machine is shared with other builds: rows are comparable within this run, less so "
    "across runs."
)
lines.append("")
lines.append(
    f"Each Rust row ran for {secs} s after a warm-up with that many threads calling one shared "
    "`Authority` on one subject (three budgeted scopes: tenant, workflow, agent). **reserve+commit** "
    "is one reserve followed by the commit of that reservation: two ledger transactions; its "
    "latency is the pair's. **ops/txn** is the mean number of ledger operations per committed "
    "SQLite transaction (> 1 only with group commit). **× ref** divides ops/s by the physical "
    "reference measured in this run: one thread running `BEGIN IMMEDIATE; INSERT a 200-byte row; "
    "UPDATE a counter; COMMIT` through rusqlite on a WAL file with the same `synchronous` "
    f"(FULL: {fmt_rate(ref.get('FULL', 0))}/s, NORMAL: {fmt_rate(ref.get('NORMAL', 0))}/s)."
)
lines.append("")
lines.append("| op | ledger | sync | group commit | threads | ops/s | p50 µs | p99 µs | ops/txn | × ref | machine | command |")
lines.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|:-:|---|")


def table_row(res, cmd):
    ledger = res["ledger"]
    sync = res.get("sync") or "–"
    gc = res.get("group_commit")
    gc = "–" if gc is None else ("on" if gc else "off")
    opt = res.get("ops_per_txn")
    ratio = "–"
    if ledger == "sqlite" and res.get("sync") in ref and ref[res["sync"]]:
        ratio = f"{res['ops_per_sec'] / ref[res['sync']]:.2f}"
    op = "insert+update txn (reference)" if res["op"] == "reference" else res["op"]
    return (
        f"| {op} | {ledger} | {sync} | {gc} | {res['threads']} | {fmt_rate(res['ops_per_sec'])} | "
        f"{fmt_us(res['p50_us'])} | {fmt_us(res['p99_us'])} | "
        f"{'–' if opt is None else f'{opt:.1f}'} | {ratio} | {MACHINE} | `{cmd}` |"
    )


order = {"reference": 0, "decide": 1, "reserve+commit": 2}
ledger_order = {"rusqlite": 0, "memory": 1, "sqlite": 2}
rows.sort(key=lambda r: (
    order[r["result"]["op"]],
    ledger_order[r["result"]["ledger"]],
    r["result"].get("sync") or "",
    bool(r["result"].get("group_commit")),
    r["result"]["threads"],
))
for r in rows:
    lines.append(table_row(r["result"], r["cmd"]))


# Binding rows, parsed from the binding scripts' markdown tables (best effort).
def md_tables(text):
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = {"header": [c.lower() for c in cells], "rows": []}
                tables.append(cur)
            elif not all(set(c) <= set("-: ") for c in cells):
                cur["rows"].append(cells)
        else:
            cur = None
    return tables


def num(s):
    try:
        return float(s.replace(",", "").replace("µs", "").strip())
    except ValueError:
        return None


def col(header, *names):
    for i, h in enumerate(header):
        if any(h.startswith(n) for n in names):
            return i
    return None


binding_notes = []
for name, path, cmd in (
    ("Python", out / "python.txt", "benches/python/run.sh"),
    ("Node", out / "node.txt", "npm run build --prefix cycles-node && node benches/node/bench.mjs"),
):
    text = path.read_text() if path.exists() else ""
    if not text.strip():
        binding_notes.append(f"{name}: not run (script absent, skipped with --rust-only, or failed).")
        continue
    parsed = 0
    for t in md_tables(text):
        h = t["header"]
        i_ledger, i_op = col(h, "ledger"), col(h, "op", "operation")
        i_form = col(h, "form")
        i_p50 = col(h, "p50")
        i_mean = col(h, f"{name.lower()} mean", "mean")
        if None in (i_ledger, i_op, i_p50, i_mean):
            continue
        for c in t["rows"]:
            mean, p50 = num(c[i_mean]), num(c[i_p50])
            if mean is None or p50 is None:
                continue
            ledger_label = c[i_ledger]
            low = ledger_label.lower()
            sync = "FULL" if "full" in low else ("NORMAL" if "normal" in low else "–")
            ledger = "memory" if "memory" in low else ("sqlite" if "sqlite" in low else ledger_label)
            extra = [x.strip() for x in ledger_label.split(",")[1:]]
            if i_form is not None:
                extra.insert(0, c[i_form])
            form = f" ({', '.join(extra)})" if extra else ""
            callers = "64 in flight" if "in flight" in form else "1"
            gc = "on" if ledger == "sqlite" else "–"
            rate = 1e6 / mean if mean else 0
            ratio = f"{rate / ref[sync]:.2f}" if sync in ref and ref[sync] else "–"
            lines.append(
                f"| {c[i_op]} — {name}{form} | {ledger} | {sync} | {gc} | {callers} | {fmt_rate(rate)} | "
                f"{fmt_us(p50)} | – | – | {ratio} | {MACHINE} | `{cmd}` |"
            )
            parsed += 1
    if parsed == 0:
        binding_notes.append(f"{name}: output not recognised; see its own section.")

lines.append("")
lines.append(
    "Binding rows (Python, Node) are per call, one caller (the Node row \"64 in flight\" keeps 64 "
    "Promises outstanding on libuv's pool), ops/s = 1 / mean; their own sections below give "
    "the detail. Their SQLite ledgers use the default options, so group commit is on."
)
for n in binding_notes:
    lines.append(f"- {n}")

# Targets of issue 8.
lines.append("")
lines.append("### Targets (issue 8)")
lines.append("")


def find(op, sync, gc, threads):
    for r in rows:
        res = r["result"]
        if (res["op"], res["ledger"], res.get("sync"), res.get("group_commit"), res["threads"]) == (
            op, "sqlite", sync, gc, threads):
            return res
    return None


t8 = find("reserve+commit", "FULL", True, 8)
if t8:
    met = "met" if t8["ops_per_sec"] >= 20_000 else "**not met**"
    lines.append(
        f"- SQLite FULL reserve+commit with 8 concurrent callers ≥ 20,000/s: "
        f"{fmt_rate(t8['ops_per_sec'])} reserve+commit pairs/s "
        f"({fmt_rate(2 * t8['ops_per_sec'])} ledger operations/s, {t8['ops_per_txn']:.1f} per "
        f"fsync'd transaction): {met}."
    )
for sync in ("FULL", "NORMAL"):
    p = {gc: [x["p50_us"] for x in lat if x["sync"] == sync and x["group_commit"] == gc] for gc in (False, True)}
    if p[False] and p[True]:
        off, on = statistics.median(p[False]), statistics.median(p[True])
        ratio = on / off
        met = "met" if ratio <= 1.2 else "**not met**"
        lines.append(
            f"- Single-caller latency with group commit ≤ 1.2 × without, SQLite {sync}, "
            f"reserve+commit p50 (median of {len(p[True])} alternated runs): "
            f"{fmt_us(on)} µs on vs {fmt_us(off)} µs off = {ratio:.2f}×: {met}. "
            f"(p50s off: {', '.join(fmt_us(x) for x in p[False])}; on: {', '.join(fmt_us(x) for x in p[True])}.)"
        )
if ins:
    lines.append("")
    lines.append("### Instructions per operation (callgrind)")
    lines.append("")
    lines.append(
        "User-space instructions per operation, one caller, counted by `valgrind --tool=callgrind` "
        "on the same binary: (instructions of a 1,200-operation run − those of a 200-operation "
        "run) / 1,000. Independent of load and disk (fsync time is not an instruction), so this "
        "is the exact CPU cost of each path. Command: `valgrind --tool=callgrind <bench binary> "
        "<args> --threads 1 --ops N`."
    )
    lines.append("")
    lines.append("| configuration | instructions / op | × reference |")
    lines.append("|---|---:|---:|")
    per = [(x["cfg"], (x["ir_1200"] - x["ir_200"]) / 1000) for x in ins]
    base = next((v for c, v in per if "reference" in c), None)
    for c, v in per:
        lines.append(f"| `{c}` | {v:,.0f} | {v / base:.1f} |" if base else f"| `{c}` | {v:,.0f} | – |")
    on = dict(per)
    for op in ("reserve+commit", "decide"):
        a = on.get(f"--ledger sqlite --sync normal --group-commit off --op {op}")
        b = on.get(f"--ledger sqlite --sync normal --group-commit on --op {op}")
        if a and b:
            lines.append("")
            lines.append(
                f"Group commit on a lone caller, {op}: {b / a:.3f} × the instructions of the "
                "unbatched path."
            )
lines.append("<!-- END benches/run.sh -->")
generated = "\n".join(lines) + "\n"

BEGIN, END = "<!-- BEGIN benches/run.sh", "<!-- END benches/run.sh -->"
if doc_path.exists():
    doc = doc_path.read_text()
else:
    doc = "# Benchmarks\n\nReproduce everything with `benches/run.sh`.\n\n" + BEGIN + " -->\n" + END + "\n"
if BEGIN in doc and END in doc:
    start = doc.index(BEGIN)
    end = doc.index(END) + len(END)
    doc = doc[:start] + generated.rstrip("\n") + doc[end:]
else:
    # Put it right after the title, ahead of the other sections.
    first = doc.find("\n## ")
    if first < 0:
        doc = doc.rstrip("\n") + "\n\n" + generated
    else:
        doc = doc[:first + 1] + generated + "\n" + doc[first + 1:]
doc_path.write_text(doc)
print(generated)
PY
