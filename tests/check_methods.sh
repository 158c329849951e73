#!/usr/bin/env bash
# check_methods.sh: the learned baselines SkipLayers, Gist, AnLLM and POD through
# `earnest train` and `earnest eval` on a small synthetic dataset:
#  - skiplayers from a trained 4-layer tiny model keeps --keep-layers 2 of its
#    layers: the saved model has 2 layers, method "skiplayers", its first two
#    layers' weights as the starting point (a run at learning rate 1e-30
#    saves them unchanged: its safetensors equal the parent's tensors without
#    layers 2 and 3, checked in numpy, < 1e-6), and eval runs on it;
#  - gist with 2 gist tokens trains (loss falls), evaluates, and its KV bytes
#    are sigma = 2 * 2 KV heads * 16 * 4 B * 4 layers * (2 gist + 20 beams * 3)
#    per user, the closed form of a cache that holds only the gist tokens;
#  - anllm and pod on the LC-Rec template (its 1 + 47 <bos> and instruction
#    words): both train (loss falls) and evaluate; anllm's sigma per user is
#    bptl * N * (48 + A + 20 * 3) with A the user's history items (its anchors;
#    eval's mean history_items), pod's (--prefix-regs 2) bptl * N * (1 + 2 +
#    5A - 1 + 20 * 3) (no instruction words), and both gammas compare against
#    the plain prompt's 48 + 5A - 1 + 60 tokens;
#  - bench --method skiplayers[:keep=M],gist[:tokens=G] on one set of random
#    weights: KV bytes equal bptl * M * (L + W * 3) and bptl * N * (G + W * 3);
#    anllm[:items=N] bptl * N * (L - 4N + N + W * 3) (default N = (L - 1) / 4),
#    pod[:regs=P,words=X] bptl * N * (L - X + P + W * 3) (default X = 47, P = 1);
#  - bad input: bench keys out of range or unknown; skiplayers without --keep-layers, --keep-layers beyond the
#    model's layers or with another method, gist with 0 gist tokens or with
#    --k, anllm with registers or --k, pod with 0 soft-prompt vectors or
#    suffix registers, an anllm target for speculative search: exit 1 or 2
#    (never a crash), a message naming the flag, nothing written.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out syn --users 80 --items 90 --codes 6 --levels 3 > /dev/null
T="--data syn --template tiger --eval-users 20 --threads 2 --quiet"
"$B" train $T --preset tiny --method finetune --epochs 1 --out full > /dev/null 2> full.log || { cat full.log; fail "finetune"; }

# SkipLayers: the first 2 of 4 layers. With a learning rate of 1e-30 the run's updates move
# nothing, so skip0's weights are the cut itself (checked against the parent in numpy).
"$B" train $T --init full --method skiplayers --keep-layers 2 --epochs 1 --lr 1e-30 --warmup 0 --weight-decay 0 \
    --out skip0 > /dev/null 2> skip0.log || { cat skip0.log; fail "skiplayers lr 0"; }
"$B" eval --model skip0 --data syn --out skip.json > /dev/null 2> skip_eval.log || { cat skip_eval.log; fail "eval skip"; }

# Gist: 2 gist tokens.
"$B" train $T --preset tiny --method gist --suffix-regs 2 --epochs 1 --out gist > /dev/null 2> gist.log \
    || { cat gist.log; fail "gist"; }
"$B" eval --model gist --data syn --out gist.json > /dev/null 2> gist_eval.log || { cat gist_eval.log; fail "eval gist"; }

# AnLLM and POD on the LC-Rec template (instruction words to keep or to drop).
TL="--data syn --template lcrec --eval-users 20 --threads 2 --quiet"
"$B" train $TL --preset tiny --method anllm --epochs 1 --out anllm > /dev/null 2> anllm.log || { cat anllm.log; fail "anllm"; }
"$B" eval --model anllm --data syn --out anllm.json > /dev/null 2> anllm_eval.log || { cat anllm_eval.log; fail "eval anllm"; }
"$B" train $TL --preset tiny --method pod --prefix-regs 2 --epochs 1 --out pod > /dev/null 2> pod.log \
    || { cat pod.log; fail "pod"; }
"$B" eval --model pod --data syn --out pod.json > /dev/null 2> pod_eval.log || { cat pod_eval.log; fail "eval pod"; }
$PY - <<'PYEOF' || fail "anllm/pod checks"
import json
per_tok = 2 * 2 * 16 * 4 * 4  # bptl * N: 2 KV heads of 16, f32, 4 layers
for name, regs in (("anllm", 0), ("pod", 2)):
    cfg = json.load(open(name + "/config.json"))["earnest"]
    assert cfg["method"] == name and cfg["prefix_regs"] == regs and cfg["suffix_regs"] == 0, cfg
    log = [l.split(",") for l in open(name + "/train_log.csv").read().split("\n")[1:] if l]
    assert float(log[-1][4]) < float(log[0][4]), (name, log[0], log[-1])
    r = json.load(open(name + ".json"))
    A, eff = r["prompt_policy"]["history_items"], r["efficiency"]  # A: mean history items per user
    kept = 48 + A if name == "anllm" else 1 + regs + 5 * A - 1  # anchors + <bos> + 47 words; pod: no words
    want, plain = per_tok * (kept + 20 * 3), per_tok * (48 + 5 * A - 1 + 20 * 3)
    assert abs(eff["sigma"] - want) < 1e-3 * per_tok and abs(eff["sigma_full"] - plain) < 1e-3 * per_tok, (name, eff, want, plain)
    assert abs(eff["gamma"] - 100 * (1 - want / plain)) < 1e-3, (name, eff["gamma"])
    print("%s: sigma %.0f B/user = closed form (%.2f history items), gamma %.1f %%, recall@10 %.4f, loss %s -> %s"
          % (name, eff["sigma"], A, eff["gamma"], r["recall@10"], log[0][4], log[-1][4]))
PYEOF

$PY - <<'PYEOF' || fail "python checks"
import json, struct, numpy as np
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]
        dt = {"F32": np.float32, "BF16": None}[v["dtype"]]
        out[k] = np.frombuffer(raw[8 + n + a: 8 + n + b], dtype=dt).reshape(v["shape"])
    return out
cfg = json.load(open("skip0/config.json"))
assert cfg["num_hidden_layers"] == 2 and cfg["earnest"]["method"] == "skiplayers", cfg
parent, cut = tensors("full/model.safetensors"), tensors("skip0/model.safetensors")
assert not any(".layers.2." in k or ".layers.3." in k for k in cut), sorted(cut)
assert set(cut) == {k for k in parent if not (".layers.2." in k or ".layers.3." in k)}
worst = max(float(np.max(np.abs(cut[k] - parent[k]))) for k in cut)
assert worst < 1e-6, worst  # lr 1e-30: one epoch of updates moves nothing measurable
s = json.load(open("skip.json"))
assert s["n_users"] > 0 and 0 <= s["recall@10"] <= 1 and s["n_layers"] == 2, s
g = json.load(open("gist.json"))
gc = json.load(open("gist/config.json"))["earnest"]
assert gc["method"] == "gist" and gc["suffix_regs"] == 2 and gc["prefix_regs"] == 0, gc
eff = g["efficiency"]
per_user = 2 * 2 * 16 * 4 * 4 * (2 + 20 * 3)
assert abs(eff["sigma"] - per_user) < 1e-6, (eff["sigma"], per_user)
log = [l.split(",") for l in open("gist/train_log.csv").read().split("\n")[1:] if l]
assert float(log[-1][4]) < float(log[0][4]), (log[0], log[-1])  # step,epoch,batch,lr,loss,...
print("skiplayers: 2 of 4 layers, cut max |diff| %.1e; gist sigma %d B/user, loss %s -> %s"
      % (worst, per_user, log[0][4], log[-1][4]))
PYEOF

# bench: the learned baselines' shapes on one set of random weights; KV bytes against the closed forms.
"$B" bench --preset tiny --method full,skiplayers:keep=1,skiplayers,gist:tokens=3,anllm,anllm:items=10,pod,pod:regs=3,words=20 \
    --prompt-len 96 --beam 5 --reps 1 \
    --threads 2 --out bench.csv > /dev/null 2> bench.log || { cat bench.log; fail "bench"; }
$PY - <<'PYEOF' || fail "bench checks"
import csv
rows = list(csv.DictReader(open("bench.csv")))
assert [r["method"] for r in rows[:4]] == ["full", "skiplayers", "skiplayers", "gist"], [r["method"] for r in rows]
bptl, N, L, W, G = 2 * 2 * 16 * 4, 4, 96, 5, 3  # tiny: 2 KV heads of 16, f32; 4-token codes: 3 stored
kv = [int(r["kv_bytes"]) for r in rows]
assert kv[0] == bptl * N * (L + W * G), kv
assert kv[1] == bptl * 1 * (L + W * G) and rows[1]["n_layers"] == "1", (kv, rows[1]["n_layers"])
assert kv[2] == bptl * 2 * (L + W * G) and rows[2]["n_layers"] == "2", (kv, rows[2]["n_layers"])
assert kv[3] == bptl * N * (3 + W * G) and rows[3]["policy"] == "gist:tokens=3", (kv, rows[3]["policy"])
assert [r["method"] for r in rows[4:]] == ["anllm"] * 2 + ["pod"] * 2, [r["method"] for r in rows]
assert kv[4] == bptl * N * ((L - 4 * 23) + 23 + W * G) and rows[4]["policy"] == "", (kv, rows[4]["policy"])
assert kv[5] == bptl * N * ((L - 4 * 10) + 10 + W * G) and rows[5]["policy"] == "anllm:items=10", kv
assert kv[6] == bptl * N * (L - 47 + 1 + W * G) and rows[6]["policy"] == "pod:regs=1" and rows[6]["prefix_regs"] == "1", kv
assert kv[7] == bptl * N * (L - 20 + 3 + W * G) and rows[7]["policy"] == "pod:regs=3,words=20", (kv, rows[7]["policy"])
print("bench: KV bytes of full, skiplayers, gist, anllm, pod = their closed forms:", kv)
PYEOF
for m in gist:tokens=0 skiplayers:layers=2 skiplayers:keep=x anllm:items=0 anllm:keep=2 pod:regs=0 pod:words=x; do
    set +e; "$B" bench --preset tiny --method "full,$m" --out "bad_bench.csv" > /dev/null 2> bad_bench.log; rc=$?; set -e
    [ $rc -eq 2 ] && grep -q -- "--method" bad_bench.log && [ ! -e bad_bench.csv ] || { cat bad_bench.log; fail "bench $m: exit $rc"; }
done
# Shapes that do not fit the prompt: refused when the row is run, nothing written.
for m in anllm:items=30 pod:words=96; do
    set +e; "$B" bench --preset tiny --method "full,$m" --prompt-len 96 --reps 1 --out bad_bench.csv > /dev/null 2> bad_bench.log
    rc=$?; set -e
    [ $rc -eq 1 ] && grep -q -- "--method ${m%%:*}" bad_bench.log && [ ! -e bad_bench.csv ] \
        || { cat bad_bench.log; fail "bench $m: exit $rc"; }
done
# Speculative search takes no AnLLM target.
set +e; "$B" eval --model anllm --data syn --draft full --out bad_spec.json > /dev/null 2> bad_spec.log; rc=$?; set -e
[ $rc -eq 1 ] && grep -q "the target is a anllm model" bad_spec.log && [ ! -e bad_spec.json ] \
    || { cat bad_spec.log; fail "speculative anllm: exit $rc"; }

bad() { # NAME EXPECTED_TEXT train flags...
    local name=$1 want=$2; shift 2
    set +e
    "$B" train $T "$@" --out "bad_$name" > /dev/null 2> "bad_$name.log"
    local rc=$?
    set -e
    [ $rc -eq 1 ] || [ $rc -eq 2 ] || { cat "bad_$name.log"; fail "$name: exit $rc, want 1 or 2"; }
    grep -q -- "$want" "bad_$name.log" || { cat "bad_$name.log"; fail "$name: no '$want' in the message"; }
    [ ! -e "bad_$name" ] || fail "$name: wrote bad_$name"
}
bad nokeep "--keep-layers" --init full --method skiplayers --epochs 1
bad deep "--keep-layers 9" --init full --method skiplayers --keep-layers 9 --epochs 1
bad keepother "--keep-layers is a skiplayers setting" --init full --method finetune --keep-layers 2 --epochs 1
bad gist0 "gist token" --preset tiny --method gist --suffix-regs 0 --epochs 1
bad gistk "--method gist" --preset tiny --method gist --k 1 --epochs 1
bad anllmreg "--method anllm" --preset tiny --method anllm --suffix-regs 1 --epochs 1
bad anllmk "--method anllm" --preset tiny --method anllm --k 1 --epochs 1
bad pod0 "soft-prompt vector" --preset tiny --method pod --prefix-regs 0 --epochs 1
bad podsuf "--method pod" --preset tiny --method pod --suffix-regs 1 --epochs 1
echo "check_methods: ok"
