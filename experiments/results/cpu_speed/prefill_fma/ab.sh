#!/bin/bash
# Prefill 8 x 512 and 1 x 4,096 (gen 1: no decode) and the batch-1 decode step after 512 tokens,
# base and new binaries alternated, 2 threads, ROUNDS rounds (default 4); CSVs in the current folder.
#   EARNEST_DIR=/tmp ROUNDS=4 bash ab.sh      (EARNEST_DIR holds earnest-base and earnest-new)
set -euo pipefail
D=${EARNEST_DIR:-/tmp}
for i in $(seq "${ROUNDS:-4}"); do
  for b in base new; do
    "$D/earnest-$b" bench --preset small --method full --prompt-len 512 --batch 8 --gen 1 --reps 5 --threads 2 \
        --out "pre512x8-$b-$i.csv" > /dev/null 2>&1
    "$D/earnest-$b" bench --preset small --method full --prompt-len 4096 --gen 1 --reps 3 --threads 2 \
        --out "pre4096-$b-$i.csv" > /dev/null 2>&1
    "$D/earnest-$b" bench --preset small --method full --prompt-len 512 --beam 1 --reps 7 --threads 2 \
        --out "dec512b1-$b-$i.csv" > /dev/null 2>&1
  done
done
# medians: prefill % of the same-moment sgemm rate, decode step / its roofline
/usr/bin/python3 - <<'PY'
import csv, glob, statistics
def col(pat, key):
    return sorted(float(next(csv.DictReader(open(f)))[key]) for f in glob.glob(pat))
for b in ("base", "new"):
    p5, p4 = col(f"pre512x8-{b}-*.csv", "prefill_vs_sgemm"), col(f"pre4096-{b}-*.csv", "prefill_vs_sgemm")
    d, r = col(f"dec512b1-{b}-*.csv", "decode_step_ms"), col(f"dec512b1-{b}-*.csv", "step_vs_roofline")
    print(f"{b}: prefill 8x512 {statistics.median(p5):.1%} of sgemm (range {p5[0]:.1%}-{p5[-1]:.1%}); "
          f"4096 {statistics.median(p4):.1%} ({p4[0]:.1%}-{p4[-1]:.1%}); batch-1 step after 512: "
          f"{statistics.median(d):.3f} ms ({d[0]:.3f}-{d[-1]:.3f}), {statistics.median(r):.2f}x roofline ({r[0]:.2f}-{r[-1]:.2f})")
PY
