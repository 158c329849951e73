#!/usr/bin/env bash
# run_fuzz.sh: build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang
# in their own build directory and run each for a bounded time. Fails if any
# harness finds a crash, leak or undefined behaviour (the input is kept in
# $BUILD/artifacts/). Environment: EARNEST_FUZZ_SECONDS (default 20 per
# harness), EARNEST_FUZZ_BUILD (default <source>/build-fuzz), EARNEST_FUZZ_CC
# (default clang).
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${EARNEST_FUZZ_BUILD:-$SRC/build-fuzz}"
SECS="${EARNEST_FUZZ_SECONDS:-20}"
CC_FUZZ="${EARNEST_FUZZ_CC:-clang}"

if ! command -v "$CC_FUZZ" >/dev/null; then
    echo "run_fuzz.sh: $CC_FUZZ not found (libFuzzer needs clang: apt-get install clang)" >&2
    exit 1
fi
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER="$CC_FUZZ" -DCMAKE_BUILD_TYPE=Release \
      -DEARNEST_FUZZ=ON -DEARNEST_TESTS=OFF >/dev/null
names=()
for f in "$SRC"/tests/fuzz/fuzz_*.c; do names+=("$(basename "$f" .c)"); done
cmake --build "$BUILD" -j2 --target "${names[@]}"

# Seed corpora: a few valid files behind the size bytes each harness reads.
seed() {   # seed NAME FILE BYTES TEXT
    mkdir -p "$BUILD/corpus/$1"
    { printf "$3"; printf '%s' "$4"; } > "$BUILD/corpus/$1/$2"
}
seed fuzz_dataset s1 '\003\005' $'1 1 2 3\n2\n3 4 5\n4 1\n'
seed fuzz_dataset s2 '\001\011' $'1 5 5 1\r\n2 3'
seed fuzz_codes s1 '\003\002\002' $'1\t<a_0><b_1><c_2><d_3>\n2\t<a_1><b_0><c_0><d_0>\n3\t<a_0><b_1><c_2><d_4>\n'
seed fuzz_codes s2 '\001\000\000' $'1\t<a_0><b_0>\n'
seed fuzz_code_json s1 '' '{"0": ["<a_1>", "<b_2>"], "1": ["<a_255>", "<b_0>"]}'
seed fuzz_code_json s2 '' '{"1": ["<a_0>"], "0": ["<a_7>"], "2": ["<a_10>"]}'

mkdir -p "$BUILD/artifacts"
failed=0
for n in "${names[@]}"; do
    mkdir -p "$BUILD/corpus/$n"
    echo "== $n: ${SECS}s"
    if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        "$BUILD/$n" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$BUILD/artifacts/$n-" "$BUILD/corpus/$n" 2>"$BUILD/$n.log"; then
        echo "run_fuzz.sh: $n FAILED; the last lines of $BUILD/$n.log:" >&2
        tail -40 "$BUILD/$n.log" >&2
        failed=1
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$BUILD/$n.log" || true
    fi
done
exit $failed
