#!/bin/bash
# decode after 512 tokens, beam 1 and 20: base and new alternated, 2 threads and 1 thread
for i in 1 2 3; do
  for b in base new; do
    for th in 2 1; do
      ${EARNEST_DIR:-/tmp}/earnest-$b bench --preset small --prompt-len 512 --beam 1,20 --reps 7 --threads $th --out dec512-$b-th$th-$i.csv > dec512-$b-th$th-$i.txt 2>&1
    done
  done
done
echo done
