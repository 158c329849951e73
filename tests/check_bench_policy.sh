#!/usr/bin/env bash
# check_bench_policy.sh: `earnest bench --method` with KV and prompt policies
# beside full and earn, one run, random weights of the tiny preset (4 layers,
# 2 KV heads of 16: 256 B of KV per token and layer), prompts of 64 tokens =
# 16 items of --gen 4 tokens, batch 2, beam 4:
#  - the CSV keeps DESIGN.md's columns first and adds policy, tau, sigma (then
#    the decode roofline's columns, check_bench.sh);
#    every row has the header's field count (specs with commas are quoted);
#  - KV bytes in closed form: streaming:tokens=32 keeps 32 prompt entries,
#    truncate:items=8 and selective:ratio=0.5 leave 32 prompt tokens, so all
#    three hold 256 * 4 * (32 + 4 beams * 3 tokens) * 2 prompts; sigma = per prompt;
#    tau = generated tokens (2 x 4 x 4) / total_ms; speedup and kv_reduction over full;
#  - bad input (unknown method or policy, a key=value before any policy, a bad
#    value, an unknown key): exit 2, a message naming --method, nothing written.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" bench --preset tiny --vocab 200 --method full,earn,snapkv:budget=0.25,window=8,streaming:tokens=32,rerotate=1,truncate:items=8,selective:ratio=0.5 \
    --prompt-len 64 --batch 2 --beam 4 --gen 4 --reps 1 --out b.csv > b.log 2>&1 || { cat b.log; fail "bench"; }

$PY - <<'PYEOF' || fail "CSV checks"
import csv
design = "method,k,prefix_regs,suffix_regs,prompt_len,batch,beam,device,prefill_ms,decode_ms,total_ms,kv_bytes,speedup,kv_reduction".split(",")
lines = list(csv.reader(open("b.csv")))
header, rows = lines[0], lines[1:]
roof = 7  # the decode roofline columns (check_bench.sh) come after these three
assert header[:len(design)] == design and header[-3 - roof:-roof] == ["policy", "tau", "sigma"], header
assert all(len(r) == len(header) for r in rows), [len(r) for r in rows]
rows = [dict(zip(header, r)) for r in rows]
assert [r["method"] for r in rows] == ["full", "earn", "snapkv", "streaming", "truncate", "selective"], rows
assert [r["policy"] for r in rows] == ["", "", "snapkv:budget=0.25,window=8,kernel=5,pool=avg",
                                       "streaming:tokens=32,sink=4,rerotate=1", "truncate:items=8",
                                       "selective:ratio=0.5"], [r["policy"] for r in rows]
full = rows[0]
assert int(full["kv_bytes"]) == 256 * 4 * (64 + 4 * 3) * 2, full["kv_bytes"]
want = 256 * 4 * (32 + 4 * 3) * 2
for r in rows[3:]:
    assert int(r["kv_bytes"]) == want, (r["method"], r["kv_bytes"], want)
snap = rows[2]  # budget 0.25 of 64 = 16 entries per layer and head
assert int(snap["kv_bytes"]) == 256 * 4 * (16 + 4 * 3) * 2, snap["kv_bytes"]
for r in rows:
    assert abs(float(r["sigma"]) - int(r["kv_bytes"]) / 2) < 0.1, r
    assert abs(float(r["tau"]) - 2 * 4 * 4 / (float(r["total_ms"]) * 1e-3)) < 1e-3 * float(r["tau"]) + 0.01, r
    assert abs(float(r["speedup"]) - float(full["total_ms"]) / float(r["total_ms"])) < 1e-3 * float(r["speedup"]) + 1e-3, r
    assert abs(float(r["kv_reduction"]) - (1 - int(r["kv_bytes"]) / int(full["kv_bytes"]))) < 1e-4, r
print("bench policies ok: " + ", ".join("%s %.2f ms %d B" % (r["method"], float(r["total_ms"]), int(r["kv_bytes"])) for r in rows))
PYEOF

bad() { # NEEDLE bench-args...
    local needle=$1; shift
    set +e
    "$B" bench --preset tiny --vocab 200 --prompt-len 16 --reps 1 --out bad.csv "$@" > /dev/null 2> bad.log; local rc=$?
    set -e
    [ $rc = 2 ] || { cat bad.log; fail "$* -> rc $rc, want 2"; }
    grep -q -- "--method" bad.log && grep -qF -- "$needle" bad.log || { cat bad.log; fail "$*: message"; }
    [ ! -e bad.csv ] || fail "$*: wrote bad.csv"
}
bad "unknown method or policy 'snapk'" --method full,snapk
bad "'budget=0.3' follows no policy" --method full,budget=0.3
bad "budget '2'" --method full,snapkv:budget=2
bad "unknown key 'items'" --method full,snapkv:items=3
bad "items '0'" --method truncate:items=0
bad "ratio '1'" --method full,selective:ratio=1
bad "empty field" --method full,,earn
echo "check_bench_policy ok"
