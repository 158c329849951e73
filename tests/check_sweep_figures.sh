#!/usr/bin/env bash
# check_sweep_figures.sh: plots/sweep.sh turns a sweep CSV (written here in
# experiments/sweep.sh's format) and bench CSVs (from `earnest bench`) into every
# sweep figure, PNG and SVG, non-empty; EARN's k is marked, axes are labelled with
# units, the unsupported register pair is shown as such (not as a value) and the
# degenerate attention (layers >= k) is not plotted; a run with nothing to draw
# fails clearly and leaves the figures already there untouched.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
B=${EARNEST_BIN:-$SRC/build/earnest}
W=$(mktemp -d /tmp/earnest_check_sweep_figures_XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "check_sweep_figures: FAIL: $*" >&2; exit 1; }
command -v gnuplot >/dev/null || fail "gnuplot not installed"

/usr/bin/python3 - "$W/sweep_fake.csv" <<'PY'
import csv, sys
params = "dataset,template,preset,method,k,prefix_regs,suffix_regs,prompt_len,seed,device,epochs,max_minutes,eval_users,eval_split,eval_limit,beam,bench_reps,bench_batch,bench_beam,attn_samples,train_args".split(",")
buckets = ["hist1-3", "hist4-5", "hist6-9", "hist10-19", "hist20+"]
rows = []
def point(method, k, P, S, status="done"):
    r = dict(dataset="beauty", template="tiger", preset="small", method=method, k=k, prefix_regs=P, suffix_regs=S,
             prompt_len=2048, seed=1, device="cpu", epochs=1, max_minutes=10, eval_users=500, eval_split="test",
             eval_limit=0, beam=20, bench_reps=3, bench_batch=1, bench_beam=20, attn_samples=32, train_args="")
    r.update(id="p%d" % len(rows), sweep="fake", model_id="m%d" % len(rows), status=status)
    if status == "done":
        acc = 0.05 + 0.01 * min(k, 3) if method == "earn" else 0.06
        r.update({"n_layers": 8, "recall@10": acc, "ndcg@10": acc / 2, "mostpop_recall@10": 0.03,
                  "mostpop_ndcg@10": 0.015, "bench_speedup": 7.0 / k if k else 1.0,
                  "bench_prefill_speedup": 7.5 / k if k else 1.0, "bench_kv_reduction": (8 - k) / 8 - 0.01 if k else 0,
                  "eval_gamma": 20.0 - k if k else 0, "bench_threads": 1,
                  "attn_density_eps_prompt": 0.2 + 0.02 * k, "attn_sink_head_prompt": 0.3,
                  "attn_sink_tail_prompt": 0.2, "attn_density_eps_late": "" if method == "earn" else 0.1})
        for i, b in enumerate(buckets):
            r[b + "_users"] = 100 * (i + 1)
            r[b + "_recall@10"] = acc * (0.8 + 0.1 * i)
    else:
        r["note"] = "EARN needs a suffix register"
    rows.append(r)
point("finetune", 0, 0, 0)
for k in (1, 2, 3, 4, 6):
    point("earn", k, 1, 1)
for P, S in ((0, 1), (2, 2), (3, 3)):
    point("earn", 2, P, S)
point("earn", 2, 1, 0, "unsupported")
metrics = sorted({k for r in rows for k in r} - set(params) - {"id", "sweep", "model_id"})
with open(sys.argv[1], "w", newline="") as f:
    w = csv.DictWriter(f, ["id", "sweep", "model_id"] + params + metrics)
    w.writeheader()
    w.writerows(rows)
PY
"$B" bench --preset tiny --method full,earn --k 1 --prompt-len 64,128,256 --reps 1 --out "$W/bench_lengths_tiny.csv" >/dev/null
"$B" bench --preset tiny --method full,earn --k 2 --prompt-len 64,128,256 --reps 1 --seed 2 --out "$W/bench_lengths_tiny2.csv" >/dev/null

OUT=$W/figs
bash "$SRC/plots/sweep.sh" --out "$OUT" "$W/sweep_fake.csv" "$W"/bench_lengths_*.csv > "$W/out" 2>&1 \
    || { cat "$W/out"; fail "plots/sweep.sh failed"; }
for fig in sweep_acc_vs_k sweep_speedup_vs_k sweep_kv_vs_k sweep_acc_vs_regs sweep_acc_by_hist sweep_attn_vs_k \
           sweep_speedup_vs_len; do
    [ -s "$OUT/$fig.png" ] && [ -s "$OUT/$fig.svg" ] || fail "$fig missing"
    [ "$(head -c 8 "$OUT/$fig.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || fail "$fig.png is not a PNG"
    [ "$(stat -c %s "$OUT/$fig.png")" -gt 10000 ] || fail "$fig.png is suspiciously small"
done
[ "$(ls "$OUT" | wc -l)" = 14 ] || fail "expected 14 files: $(ls "$OUT")"
svg() { grep -c -F -- "$2" "$OUT/$1.svg" >/dev/null || fail "$1.svg lacks '$2'"; }
svg sweep_acc_vs_k "EARN's k = N/4 = 2"
svg sweep_acc_vs_k "finetune Recall@10"
svg sweep_acc_vs_k "MostPop Recall@10"
svg sweep_speedup_vs_k "closed form N/k"
svg sweep_speedup_vs_k "speedup of EARN over the full model (x)"
svg sweep_kv_vs_k "closed form (N-k)/N"
svg sweep_kv_vs_k "KV-cache bytes saved vs full (%)"
svg sweep_acc_vs_regs "not trainable here"
svg sweep_acc_vs_regs "1+0 prefix only"
svg sweep_acc_vs_regs "0+1 suffix only"
svg sweep_acc_by_hist "20+ (500 users)"
svg sweep_attn_vs_k "left out"
svg sweep_speedup_vs_len "tiny (N=4, k=1): N/k"
svg sweep_speedup_vs_len "tiny2 (N=4, k=2): prefill"
svg sweep_speedup_vs_len "prompt length (tokens)"
ls -A "$OUT" | grep '^\.sweep-figures' > /dev/null && fail "temporary folder left in $OUT"

# Nothing to draw: a clear error, the figures already there untouched.
before=$(md5sum "$OUT/sweep_acc_vs_k.png")
printf 'a,b\n1,2\n' > "$W/other.csv"
set +e
msg=$(bash "$SRC/plots/sweep.sh" --out "$OUT" "$W/other.csv" 2>&1); rc=$?
set -e
[ $rc -ne 0 ] && grep -q "nothing to draw" <<<"$msg" || fail "nothing-to-draw case: rc $rc, '$msg'"
[ "$(md5sum "$OUT/sweep_acc_vs_k.png")" = "$before" ] || fail "a failed run changed existing figures"
ls -A "$OUT" | grep '^\.sweep-figures' > /dev/null && fail "temporary folder left after failure"
echo "check_sweep_figures: OK"
