#!/usr/bin/env bash
# earnest bench: the CSV carries DESIGN.md's columns in order, EARN rows report
# the closed-form KV reduction, --train writes its CSV, bad flags exit 2.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
B=$EARNEST_BIN
"$B" bench --preset tiny --method full,earn --k 1 --prompt-len 64 --batch 2 --beam 1,4 --reps 1 --out "$work/b.csv" >/dev/null
"$B" bench --train --preset tiny --prompt-len 32 --batch 2 --reps 1 --out "$work/t.csv" >/dev/null
/usr/bin/python3 - "$work" <<'PY'
import csv, sys
w = sys.argv[1]
rows = list(csv.DictReader(open(w + "/b.csv")))
design = "method,k,prefix_regs,suffix_regs,prompt_len,batch,beam,device,prefill_ms,decode_ms,total_ms,kv_bytes,speedup,kv_reduction".split(",")
header = open(w + "/b.csv").readline().strip().split(",")
assert header[:len(design)] == design, header
assert len(rows) == 4 and [r["method"] for r in rows] == ["full", "earn", "full", "earn"], rows
for full, earn in zip(rows[0::2], rows[1::2]):
    # tiny: N = 4 layers, k = 1, r = 2 registers, W beams, G = 3 stored generated tokens, L = 64
    N, k, r, L, W, G = 4, 1, 2, 64, int(earn["beam"]), 3
    closed = 1 - (k * L + N * (r + W * G)) / (N * (L + W * G))
    assert abs(float(earn["kv_reduction"]) - closed) < 1e-3, (earn["kv_reduction"], closed)
    assert float(full["speedup"]) == 1.0 and float(earn["prefill_ms"]) > 0
# The decode roofline columns come last, after the policy columns (check_bench_policy.sh) and every
# earlier column in its order.
roof = "decode_step_ms,step_bytes,step_flops,copy_gbs,triad_gbs,roofline_step_ms,step_vs_roofline".split(",")
assert header[-len(roof):] == roof, header
assert header[header.index("draft_share"):-len(roof)] == ["draft_share", "policy", "tau", "sigma"], header
D, F, V, N, Gkv, E, B = 64, 176, 1024, 4, 2, 16, 2
params = V * D + N * (2 * D + 2 * D * D + 2 * Gkv * E * D + 3 * D * F) + D  # tied embeddings
for row in rows:
    W, earn = int(row["beam"]), row["method"] == "earn"
    kv_tokens = (1 * 64 + N * (2 + W * 2)) if earn else N * (64 + W * 2)  # the mean step s = 2 of 1..3
    want = 4 * (params + B * W * D) + B * kv_tokens * 2 * Gkv * E * 4
    assert abs(float(row["step_bytes"]) - want) <= 1, (row["step_bytes"], want)
    assert abs(float(row["decode_step_ms"]) - float(row["decode_ms"]) / 3) < 1e-3, row
    bw = max(float(row["copy_gbs"]), float(row["triad_gbs"]))
    assert bw > 0 and float(row["roofline_step_ms"]) >= want / (bw * 1e9) * 1e3 * 0.5, row
    assert float(row["step_flops"]) > 0 and float(row["step_vs_roofline"]) > 0, row
t = list(csv.DictReader(open(w + "/t.csv")))
assert len(t) == 1 and float(t[0]["tokens_per_s"]) > 0 and float(t[0]["train_vs_sgemm"]) > 0, t
print("1 passed, 0 failed")
PY
for bad in "--prompt-len 0" "--method fast" "--batch x" "--k 9 --method earn"; do
  if "$B" bench --preset tiny $bad --out "$work/bad.csv" 2>"$work/err"; then fail "bench accepted $bad"; fi
  [ ! -e "$work/bad.csv" ] || fail "bench wrote a CSV for $bad"
done
if "$B" bench --preset nope 2>"$work/err"; then fail "bench accepted an unknown preset"; fi
grep -q "unknown preset 'nope'" "$work/err" || fail "unknown preset message"
# --device: cpu is recorded in the CSV
"$B" bench --preset tiny --method full --prompt-len 16 --reps 1 --device cpu --out "$work/d.csv" >/dev/null
[ "$(sed -n 2p "$work/d.csv" | cut -d, -f8)" = cpu ] || fail "device column of --device cpu"
if ! nvidia-smi -L >/dev/null 2>&1; then # no GPU here (or no CUDA build): refused before any work
    if "$B" bench --preset tiny --device cuda --out "$work/cuda.csv" 2>"$work/err"; then fail "bench accepted --device cuda"; fi
    grep -qE "this build has no CUDA runtime|--device cuda: no (usable )?CUDA device" "$work/err" ||
        fail "--device cuda message: $(cat "$work/err")"
    [ ! -e "$work/cuda.csv" ] || fail "bench wrote a CSV for --device cuda"
fi
if "$B" bench --preset tiny --device tpu 2>"$work/err"; then fail "bench accepted --device tpu"; fi
# the base preset: 12 layers, d = 768
"$B" bench --preset base --method full,earn --prompt-len 8 --reps 1 --out "$work/base.csv" > "$work/base.txt"
grep -q "12 layers, d=768" "$work/base.txt" || fail "base preset shape"
