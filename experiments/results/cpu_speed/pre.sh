#!/bin/bash
# 20-beam decode after 4,096 tokens; prefill 8 x 512 and 1 x 4,096 (gen 1: no decode); base and new alternated, 1 thread
for i in 1 2; do
  for b in base new; do
    ${EARNEST_DIR:-/tmp}/earnest-$b bench --preset small --prompt-len 512 --batch 8 --gen 1 --reps 5 --threads 1 --out pre512x8-$b-$i.csv > pre512x8-$b-$i.txt 2>&1
    ${EARNEST_DIR:-/tmp}/earnest-$b bench --preset small --prompt-len 4096 --gen 1 --reps 3 --threads 1 --out pre4096-$b-$i.csv > pre4096-$b-$i.txt 2>&1
    ${EARNEST_DIR:-/tmp}/earnest-$b bench --preset small --prompt-len 4096 --beam 20 --reps 3 --threads 1 --out dec4096-$b-$i.csv > dec4096-$b-$i.txt 2>&1
  done
done
echo done
