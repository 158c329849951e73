#!/usr/bin/env bash
# check_convert.sh: `earnest convert` end to end on stories260K: the files it
# writes, and clear failures (nonzero exit, message naming the file, no output
# left behind) on bad inputs.
set -u
: "${EARNEST_BIN:?EARNEST_BIN must name the earnest binary}"
: "${EARNEST_SHARED:?EARNEST_SHARED must name the shared mirror}"
MODEL="$EARNEST_SHARED/models/stories260K/stories260K.bin"
TOK="$EARNEST_SHARED/models/stories260K/tok512.bin"
TMP=$(mktemp -d /tmp/earnest_check_convert.XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# --help works and exits 0; a missing flag is a usage error (2).
"$EARNEST_BIN" convert --help | grep -- "--llama2c" > /dev/null || fail "convert --help does not describe --llama2c"
"$EARNEST_BIN" convert --out "$TMP/x" 2>"$TMP/err"; rc=$?
[ "$rc" = 2 ] || fail "missing --llama2c: exit $rc, want 2"
grep -q -- "--llama2c" "$TMP/err" || fail "missing --llama2c: message does not name the flag"

# A good conversion into a new directory.
"$EARNEST_BIN" convert --llama2c "$MODEL" --tokenizer "$TOK" --out "$TMP/m" >"$TMP/out" 2>&1 \
    || { cat "$TMP/out"; fail "convert of stories260K failed"; }
for f in config.json model.safetensors tokenizer.bin; do
    [ -s "$TMP/m/$f" ] || fail "missing $TMP/m/$f"
done
cmp -s "$TOK" "$TMP/m/tokenizer.bin" || fail "tokenizer.bin is not a verbatim copy"
# No temporary files or directories left beside or inside the output.
leftovers=$(find "$TMP" -name '*.tmp.*' | head -n 3)
[ -z "$leftovers" ] || fail "temporary files left behind: $leftovers"
# config.json has the HF fields of this model (checked with python's json, not grep).
/usr/bin/python3 - "$TMP/m/config.json" <<'EOF' || fail "config.json fields"
import json, sys
c = json.load(open(sys.argv[1]))
want = {"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8,
        "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512,
        "tie_word_embeddings": True}
bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
assert not bad, bad
assert c["architectures"] == ["LlamaForCausalLM"], c["architectures"]
assert abs(c["rms_norm_eps"] - 1e-5) < 1e-12 and c["rope_theta"] == 10000, c
EOF
# The written checkpoint, read with numpy and run through an independent
# numpy transcription of Hugging Face's LlamaForCausalLM (rotate_half RoPE,
# repeat_kv GQA), greedily decodes the same ids as llama2.c's run.c
# (`run stories260K.bin -z tok512.bin -t 0 -n 64 -i "Once upon a time"`,
# ids printed by a debug line in a copy of run.c built outside this repo).
/usr/bin/python3 - "$TMP/m" <<'EOF' || fail "HF-layout numpy forward of the converted checkpoint"
import json, struct, sys
import numpy as np
d = sys.argv[1]
c = json.load(open(d + "/config.json"))
raw = open(d + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
W = {}
for k, v in hdr.items():
    if k == "__metadata__": continue
    assert v["dtype"] == "F32", (k, v["dtype"])
    a, b = v["data_offsets"]
    W[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
D, H, G, L = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
E, eps, theta = D // H, c["rms_norm_eps"], c["rope_theta"]
lm_head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
def rms(x, w): return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
def rope(x, pos):  # x [T, heads, E]
    inv = 1.0 / theta ** (np.arange(0, E, 2) / E)
    f = np.outer(pos, inv); emb = np.concatenate([f, f], -1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    rot = np.concatenate([-x[..., E // 2:], x[..., :E // 2]], -1)
    return x * cos + rot * sin
def forward(ids):
    T = len(ids); pos = np.arange(T)
    x = W["model.embed_tokens.weight"][ids]
    for l in range(L):
        p = "model.layers.%d." % l
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope((h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, E), pos)
        k = rope((h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, G, E), pos)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, G, E)
        k, v = np.repeat(k, H // G, 1), np.repeat(v, H // G, 1)
        s = np.einsum("qhe,khe->hqk", q, k) / np.sqrt(E)
        s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
        o = np.einsum("hqk,khe->qhe", a, v).reshape(T, H * E)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = h @ W[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
    return rms(x, W["model.norm.weight"]) @ lm_head.T
want = [432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
        411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352, 266, 268, 388, 426,
        338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415, 426, 13, 438, 310]
ids = [1, 403, 407, 261, 378]
while len(ids) < 5 + 60:
    ids.append(int(np.argmax(forward(ids)[-1])))
got = ids[5:]
assert got == want, ("mismatch", got)
EOF
# Converting again into the existing directory succeeds and keeps other files.
echo keep >"$TMP/m/notes.txt"
"$EARNEST_BIN" convert --llama2c "$MODEL" --tokenizer "$TOK" --out "$TMP/m" >/dev/null 2>&1 \
    || fail "convert into an existing directory failed"
[ -f "$TMP/m/notes.txt" ] || fail "convert removed an unrelated file from an existing directory"

# Bad inputs: nonzero exit, a message naming the file, no output directory.
expect_fail() { # name, file the message must name, then the arguments
    local name=$1 needle=$2; shift 2
    "$EARNEST_BIN" convert "$@" >"$TMP/out" 2>&1; local rc=$?
    [ "$rc" -ne 0 ] || fail "$name: exit 0"
    grep -qF -- "$needle" "$TMP/out" || { cat "$TMP/out"; fail "$name: message does not name $needle"; }
    [ ! -e "$TMP/bad_out" ] || fail "$name: left $TMP/bad_out behind"
}
expect_fail "missing model" "$TMP/nope.bin" --llama2c "$TMP/nope.bin" --tokenizer "$TOK" --out "$TMP/bad_out"
head -c 1000 "$MODEL" >"$TMP/short.bin"
expect_fail "truncated model" "$TMP/short.bin" --llama2c "$TMP/short.bin" --tokenizer "$TOK" --out "$TMP/bad_out"
expect_fail "missing tokenizer" "$TMP/nope_tok.bin" --llama2c "$MODEL" --tokenizer "$TMP/nope_tok.bin" --out "$TMP/bad_out"
head -c 3000 "$TOK" >"$TMP/short_tok.bin"
expect_fail "truncated tokenizer" "$TMP/short_tok.bin" --llama2c "$MODEL" --tokenizer "$TMP/short_tok.bin" --out "$TMP/bad_out"
# Missing parent folders are created; a parent that is a regular file cannot be.
echo x >"$TMP/a_file"
expect_fail "unwritable output" "$TMP/a_file" --llama2c "$MODEL" --tokenizer "$TOK" --out "$TMP/a_file/sub/model"
"$EARNEST_BIN" convert --llama2c "$MODEL" --tokenizer "$TOK" --out "$TMP/new/parents/model" >/dev/null
[ -f "$TMP/new/parents/model/config.json" ] || { echo "FAIL: --out with missing parents"; exit 1; }
echo "check_convert: ok"
