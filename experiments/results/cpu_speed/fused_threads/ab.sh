#!/bin/bash
# The fused decode layer's thread count chosen by timing (FusedThreads, model.h)
# against the one-thread fused layer it replaces: EARNEST_DIR holds
# earnest-1t (commit aea0173) and earnest-new. Quiet machine: decode after 512
# tokens at beam 1 and 20, 2 threads, the binaries alternated, 3 rounds.
# Oversubscribed: two 2-thread benches at once on the 2 cores (as ctest -j2
# runs them), each binary in turn, 2 rounds.
set -u
D=${EARNEST_DIR:-/tmp}
B="bench --preset small --prompt-len 512 --reps 7 --threads 2"
for i in 1 2 3; do
    for b in 1t new; do
        "$D/earnest-$b" $B --beam 1,20 --out quiet-$b-$i.csv > quiet-$b-$i.txt 2>&1
    done
done
for i in 1 2; do
    for b in 1t new; do
        "$D/earnest-$b" $B --beam 1 --out busy-$b-$i-a.csv > busy-$b-$i-a.txt 2>&1 &
        "$D/earnest-$b" $B --beam 1 --out busy-$b-$i-b.csv > busy-$b-$i-b.txt 2>&1 &
        wait
    done
done
echo done
