#!/usr/bin/env bash
# Runs ckpt's benchmarks against its peers and writes benches/REPORT.md: medians, ratios, the
# issue's targets met or missed, and the machine they ran on.
#
#   benches/report.sh                  # everything (about 25 minutes, plus building the
#                                      # 1M-entry fixtures once: see benches/scale.rs)
#   CKPT_BENCHES="peers" benches/report.sh   # some criterion benches only; the report is
#                                            # rendered from whatever target/criterion holds
#   CKPT_REPORT_ONLY=1 benches/report.sh     # render again from the last results
#
# Every figure in REPORT.md comes from this run's files under target/criterion and
# target/ckpt-bench-report; nothing is typed in by hand.
set -euo pipefail
cd "$(dirname "$0")"

out=target/ckpt-bench-report
mkdir -p "$out"
benches=${CKPT_BENCHES:-"peers threads scale large"}

# The executable cargo built for bench target $1.
bench_bin() {
    cargo bench --no-run --bench "$1" --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1" | tail -1
}

if [[ -z "${CKPT_REPORT_ONLY:-}" ]]; then
    date -u +"%Y-%m-%d %H:%M UTC" >"$out/started"
    uptime >"$out/load-before"
    for b in $benches; do
        echo "== cargo bench --bench $b" >&2
        cargo bench --bench "$b" -- --noplot 2>&1 | tee "$out/$b.log" >&2
    done

    # Not criterion: interleaved rounds of their own, one JSON line per system.
    echo "== cargo bench --bench bulk" >&2
    cargo bench --bench bulk | tee "$out/bulk.log" >&2
    grep '^{' "$out/bulk.log" >"$out/bulk.jsonl"
    echo "== cargo bench --bench group_commit" >&2
    cargo bench --bench group_commit | tee "$out/group_commit.log" >&2
    grep '^{' "$out/group_commit.log" >"$out/group_commit.jsonl"

    : >"$out/interleaved.jsonl"
    for size in 256 4096 1048576; do
        echo "== interleaved hit path (cargo bench --bench hitpath -- ab $size 15)" >&2
        cargo bench --bench hitpath -- ab "$size" 15 | tee "$out/hitpath-$size.txt" >&2
        grep '^{' "$out/hitpath-$size.txt" >>"$out/interleaved.jsonl"
    done
    for size in 256 4096; do
        echo "== interleaved misses (cargo bench --bench hitpath -- abmiss $size 15)" >&2
        cargo bench --bench hitpath -- abmiss "$size" 15 | tee "$out/hitpath-miss-$size.txt" >&2
        grep '^{' "$out/hitpath-miss-$size.txt" >>"$out/interleaved.jsonl"
        echo "== interleaved relaxed misses (cargo bench --bench hitpath -- abrelaxed $size 15)" >&2
        cargo bench --bench hitpath -- abrelaxed "$size" 15 | tee "$out/hitpath-relaxed-$size.txt" >&2
        grep '^{' "$out/hitpath-relaxed-$size.txt" >>"$out/interleaved.jsonl"
    done

    # Memory and file sizes, each in a fresh process.
    if [[ " $benches " == *" scale "* ]]; then
        : >"$out/scale.jsonl"
        scale=$(bench_bin scale)
        for sys in ckpt ckpt-trust raw; do
            for n in 10000 "${CKPT_BENCH_ENTRIES:-1000000}"; do
                echo "== $scale mem $sys $n" >&2
                "$scale" mem "$sys" "$n" | tee -a "$out/scale.jsonl" >&2
            done
        done
    fi
    if [[ " $benches " == *" large "* ]]; then
        : >"$out/large.jsonl"
        large=$(bench_bin large)
        for sys in ckpt raw; do
            for op in save load; do
                echo "== $large mem $op $sys" >&2
                "$large" mem "$op" "$sys" | tee -a "$out/large.jsonl" >&2
            done
        done
    fi
    uptime >"$out/load-after"
fi

python3 report.py target/criterion "$out" >REPORT.md
echo "wrote benches/REPORT.md (from benches/target)" >&2
