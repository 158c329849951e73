#!/usr/bin/env bash
# check_sweep_bench.sh: bench-only sweep points (dataset=none; the GPU k sweep's
# kind, experiments/sweeps/gpu_llama2_k.sh) on the CPU with the tiny preset: each
# point runs earnest bench on random weights, and sweep.csv carries the speedup
# and KV reduction beside the closed forms, the device, the dtype and the
# prefill's share of the matrix-product ceiling. Bad specs: a 7B shape with a
# dataset (they are never trained here), dtype=bf16 on the CPU.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
export EARNEST=${EARNEST_BIN:-$SRC/build/earnest}
PY=/usr/bin/python3
W=$(mktemp -d /tmp/earnest_check_sweep_bench_XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "check_sweep_bench: FAIL: $*" >&2; exit 1; }
printf '%s\n' "name=bo" "dataset=none" "preset=tiny" "bench_reps=1" "bench_beam=2" 'prompt_len="16 32"' \
    "grid method=earn k=1" "grid method=finetune prompt_len=16" > "$W/spec.sh"
"$SRC/experiments/sweep.sh" "$W/spec.sh" --jobs 1 --results "$W/r" > "$W/out" 2>&1 || { cat "$W/out"; fail "sweep"; }
$PY - "$W/r/sweep.csv" <<'PYEOF' || fail "sweep.csv"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 3, len(rows)
for r in rows:
    assert r["status"] == "done" and r["dataset"] == "none" and r["bench_device"] == "cpu", r
    assert r["bench_dtype"] == "f32" and float(r["bench_gemm_gflops"]) > 0 and float(r["bench_prefill_vs_gemm"]) > 0, r
    if r["method"] == "earn":
        assert float(r["closed_speedup"]) == 4.0 and abs(float(r["closed_kv_reduction"]) - 0.75) < 1e-12, r
        assert 0 < float(r["bench_kv_reduction"]) < 1 and float(r["bench_speedup"]) > 0, r
    else:
        assert float(r["bench_speedup"]) == 1.0 and float(r["bench_kv_reduction"]) == 0.0, r
print("check_sweep_bench: 3 bench-only points, figures beside the closed forms")
PYEOF
"$EARNEST" prepare synthetic --users 50 --out "$W/data/syn" > /dev/null
bad() { # bad MESSAGE SPEC_LINES...
    local msg=$1; shift
    printf '%s\n' "data=$W/data" "$@" > "$W/bad.sh"
    set +e
    "$SRC/experiments/sweep.sh" "$W/bad.sh" --jobs 1 --results "$W/bad" > "$W/bad.out" 2>&1; local rc=$?
    set -e
    [ $rc = 2 ] && grep -qF -- "$msg" "$W/bad.out" || fail "spec [$*]: rc $rc: $(cat "$W/bad.out")"
    [ ! -e "$W/bad" ] || fail "spec [$*]: something was written"
}
bad "preset=llama2-7b: unknown value with dataset=syn" "dataset=syn" "preset=llama2-7b"
bad "dtype=bf16 with device=cpu" "dataset=none" "dtype=bf16"
echo "check_sweep_bench: OK"
