#!/usr/bin/env bash
# run_fuzz.sh: build the libFuzzer harnesses (tests/fuzz/fuzz_*.c) with clang
# in their own build directory and run each for a bounded time. Fails if any
# harness finds a crash, leak or undefined behaviour (the input is kept in
# $BUILD/artifacts/). Environment: EARNEST_FUZZ_SECONDS (default 20 per
# harness), EARNEST_FUZZ_BUILD (default <source>/build-fuzz), EARNEST_FUZZ_CC
# (default clang). No single allocation may exceed 512 MB (-malloc_limit_mb):
# a parser must check a size field against its input before allocating for it.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${EARNEST_FUZZ_BUILD:-$SRC/build-fuzz}"
SECS="${EARNEST_FUZZ_SECONDS:-20}"
CC_FUZZ="${EARNEST_FUZZ_CC:-clang}"

if ! command -v "$CC_FUZZ" >/dev/null; then
    echo "run_fuzz.sh: $CC_FUZZ not found (libFuzzer needs clang: apt-get install clang)" >&2
    exit 1
fi
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER="$CC_FUZZ" -DCMAKE_BUILD_TYPE=Release -DEARNEST_CUDA=OFF \
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
seed fuzz_atspeed_seq s1 '\000' $'1 1 2 3\n2 4 5\n3 6\n'
seed fuzz_atspeed_seq s2 '\005' $'1 5 4\r\n2\t3 \n3 1\n   \n'
seed fuzz_vocab s1 '' $'<pad>\n<bos>\n<eos>\n<unk>\n<reg_pre_0>\n<reg_suf_0>\n<reg_suf_1>\nBelow\nitems\n<a_0>\n<a_1>\n<b_0>\n<b_2>\n'
seed fuzz_vocab s2 '' $'<orig_0>\r\n<unk>\r\n<eos>\r\n<bos>\r\n<pad>\r\n<d_7>'
seed fuzz_meta s1 '' '{"format": "earnest-dataset", "version": 1, "name": "tiny", "source": "test",
 "n_users": 4, "n_items": 6, "code_levels": 3, "codes_per_level": [3, 4, 5], "seed": 7,
 "interactions": {"train": 29, "valid": 5, "test": 4}}'
seed fuzz_meta s2 '' '{"format": "earnest-dataset", "version": 1, "name": "s", "n_users": 2, "n_items": 3,
 "code_levels": 2, "codes_per_level": [4, 4], "codes_method": "earnest-rkmeans", "semantic_ids": {"levels": 2,
 "codes": 4, "dim": 8, "window": 1, "iters": 5, "power_iters": 3, "seed": 1}}'
seed fuzz_config s1 '' '{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
 "intermediate_size": 40, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
 "head_dim": 4, "vocab_size": 50, "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "hidden_act": "silu", "attention_bias": false, "torch_dtype": "float32",
 "earnest": {"method": "earn", "layer_split_k": 2, "prefix_regs": 1, "suffix_regs": 1, "template": "tiger"}}'
seed fuzz_config s2 '' '{"model_type": "qwen2", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
 "num_attention_heads": 2, "vocab_size": 3, "rope_scaling": null, "use_sliding_window": false}'

seed fuzz_st_index s1 '' '{"metadata": {"total_size": 28}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors",
 "z": "b.safetensors"}}'
seed fuzz_st_index s2 '' '{"weight_map": {"y": "a.safetensors", "x": "a.safetensors"}}'

# Binary seeds: le BYTES VALUE prints VALUE's little-endian bytes as printf escapes.
le() { local i; for ((i = 0; i < $1; i++)); do printf '\\%03o' $(( ($2 >> (8 * i)) & 255 )); done; }
zeros() { local i; for ((i = 0; i < $1; i++)); do printf '\\000'; done; }
st_seed() {   # st_seed FILE HEADER DATA: a safetensors file
    seed fuzz_safetensors "$1" "$(le 8 ${#2})" "$2"
    printf "$3" >> "$BUILD/corpus/fuzz_safetensors/$1"
}
st_seed s1 '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},"c":{"dtype":"F16","shape":[],"data_offsets":[12,14]}}' \
    "$(le 4 1065353216)$(le 4 3212836864)$(le 2 16256)$(le 2 49024)$(le 2 15360)"
st_seed s2 '{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}' \
    "$(le 4 1065353216)"
l2c_seed() {  # l2c_seed FILE dim hidden layers heads kv_heads vocab seq_len: a llama2.c model of zeros
    local d=$2 f=$3 l=$4 h=$5 g=$6 v=$7 s=$8 V=${7#-} e=$(($2 / $5))
    local n=$((V * d + l * d + l * d * d + 2 * l * g * e * d + l * d * d + l * d + 3 * l * f * d + d + s * e))
    [ "$v" -lt 0 ] && n=$((n + V * d))
    seed fuzz_llama2c "$1" "$(le 4 $d)$(le 4 $f)$(le 4 $l)$(le 4 $h)$(le 4 $g)$(le 4 $v)$(le 4 $s)$(zeros $((4 * n)))" ''
}
l2c_seed s1 2 1 1 1 1 1 1
l2c_seed s2 4 3 2 2 1 -3 2
tok_seed() {  # tok_seed FILE TEXT PIECE...: a tokenizer.bin of the pieces (scores -1, -2, ...)
    local f=$1 text=$2 fmt="" i=0 p
    shift 2
    fmt="$(le 4 8)"
    for p in "$@"; do i=$((i + 1)); fmt+="$(le 4 $((3212836864 + i * 1024)))$(le 4 ${#p})$p"; done
    seed fuzz_tokenizer "$f" "$(le 2 $(($# - 3)))$(le 1 ${#text})$text$fmt" ''
}
tok_seed s1 'ab a' '<unk>' '<s>' '</s>' ' ' 'a' 'b' 'ab' ' a'
tok_seed s2 '' '<unk>' '<s>' '</s>' '<0x00>' ' '
TOK512="$SRC/../shared/models/stories260K/tok512.bin"   # the real llama2.c tokenizer, when the mirror has it
if [ -f "$TOK512" ]; then
    mkdir -p "$BUILD/corpus/fuzz_tokenizer"
    { printf "$(le 2 509)$(le 1 16)Once upon a time"; cat "$TOK512"; } > "$BUILD/corpus/fuzz_tokenizer/tok512"
fi
# The attention-dump generator reads its choices from the bytes; runs of 0 are
# the documented schema (attn_dump.h) with every choice the default.
seed fuzz_attn_dump s1 "$(zeros 64)" ''
seed fuzz_attn_dump s2 "\\001\\001\\002$(zeros 14)\\005$(zeros 30)\\002$(zeros 12)\\003\\001\\000\\002$(zeros 200)" ''

mkdir -p "$BUILD/artifacts"
failed=0
for n in "${names[@]}"; do
    mkdir -p "$BUILD/corpus/$n"
    echo "== $n: ${SECS}s"
    dict=()   # key names and literals for the JSON harnesses (jansson is not instrumented)
    [ -f "$SRC/tests/fuzz/$n.dict" ] && dict=(-dict="$SRC/tests/fuzz/$n.dict")
    if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        "$BUILD/$n" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$BUILD/artifacts/$n-" "$BUILD/corpus/$n" 2>"$BUILD/$n.log"; then
        echo "run_fuzz.sh: $n FAILED; the last lines of $BUILD/$n.log:" >&2
        tail -40 "$BUILD/$n.log" >&2
        failed=1
    else
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$BUILD/$n.log" || true
    fi
done
exit $failed
