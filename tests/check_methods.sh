#!/usr/bin/env bash
# check_methods.sh: the learned baselines SkipLayers, Gist, AnLLM, POD and compress500x through
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
#  - compress500x from the trained finetune model (2 compression tokens, LoRA
#    rank 4, lr 1e-2, 1 epoch): config method/rank/alpha, the checkpoint holds
#    the 32 adapters under PEFT's names (4 layers x q/k/v/o x lora_A/B, lora_B
#    trained away from 0), every base tensor bit for bit the parent's except
#    the embedding rows of <reg_suf_0> and <reg_suf_1> (the compression
#    tokens), which moved; loss falls; eval's sigma is Gist's closed form
#    bptl * N * (2 + 20 * 3) per user; a run killed after its 2nd update and
#    resumed saves the same model.safetensors byte for byte;
#  - bench --method skiplayers[:keep=M],gist[:tokens=G] on one set of random
#    weights: KV bytes equal bptl * M * (L + W * 3) and bptl * N * (G + W * 3);
#    anllm[:items=N] bptl * N * (L - 4N + N + W * 3) (default N = (L - 1) / 4),
#    pod[:regs=P,words=X] bptl * N * (L - X + P + W * 3) (default X = 47, P = 1),
#    compress500x:tokens=C,rank=R bptl * N * (C + W * 3);
#  - bad input: bench keys out of range or unknown; skiplayers without --keep-layers, --keep-layers beyond the
#    model's layers or with another method, gist with 0 gist tokens or with
#    --k, anllm with registers or --k, pod with 0 soft-prompt vectors or
#    suffix registers, compress500x without --init, with --lora-rank 0, with
#    --k or 0 compression tokens, from a non-finetune --init, --lora-rank with
#    another method, an anllm or compress500x target for speculative search: exit 1 or 2
#    (never a crash), a message naming the flag, nothing written.
set -euo pipefail
B="${EARNEST_BIN:?}"
export ST_HELPERS="${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/tests/helpers"
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

# compress500x: 2 compression tokens, LoRA rank 4 on the frozen finetune model.
"$B" train $T --init full --method compress500x --suffix-regs 2 --lora-rank 4 --lr 1e-2 --epochs 1 --out c500x \
    > /dev/null 2> c500x.log || { cat c500x.log; fail "compress500x"; }
# Killed after its 2nd update and resumed, the same run ends bit for bit where the uninterrupted one did.
set +e
"$B" train $T --init full --method compress500x --suffix-regs 2 --lora-rank 4 --lr 1e-2 --epochs 1 --save-every 1 \
    --test-crash-after-step 2 --out c500x_r > /dev/null 2> c500x_r.log
rc=$?; set -e
[ $rc -ne 0 ] || fail "compress500x: the crash test did not crash"
"$B" train $T --init full --method compress500x --suffix-regs 2 --lora-rank 4 --lr 1e-2 --epochs 1 --save-every 1 \
    --resume --out c500x_r > /dev/null 2> c500x_r.log || { cat c500x_r.log; fail "compress500x resume"; }
cmp -s c500x/model.safetensors c500x_r/model.safetensors || fail "compress500x: the resumed run differs"
"$B" eval --model c500x --data syn --out c500x.json > /dev/null 2> c500x_eval.log || { cat c500x_eval.log; fail "eval c500x"; }
"$B" eval --model full --data syn --out full.json > /dev/null 2> full_eval.log || { cat full_eval.log; fail "eval full"; }
$PY - <<'PYEOF' || fail "compress500x checks"
import json, os, sys
import numpy as np
sys.path.insert(0, os.environ["ST_HELPERS"])
from st_read import tensors
cfg = json.load(open("c500x/config.json"))["earnest"]
assert cfg["method"] == "compress500x" and cfg["suffix_regs"] == 2 and cfg["prefix_regs"] == 0, cfg
assert cfg["lora_rank"] == 4 and cfg["lora_alpha"] == 4.0, cfg
parent, c = tensors("full/model.safetensors"), tensors("c500x/model.safetensors")
lora = sorted(set(c) - set(parent))
want = sorted("model.layers.%d.self_attn.%s_proj.lora_%s.weight" % (l, p, ab)
              for l in range(4) for p in "qkvo" for ab in "AB")
assert lora == want, lora
assert all(c[k].shape[0] == 4 for k in lora if "lora_A" in k) and all(c[k].shape[1] == 4 for k in lora if "lora_B" in k)
assert min(float(np.abs(c[k]).max()) for k in lora if "lora_B" in k) > 0  # B starts at 0 and was trained
voc = open("c500x/vocab.txt").read().split("\n")
rows = {voc.index("<reg_suf_0>"), voc.index("<reg_suf_1>")}
for k in parent:
    d = np.abs(c[k] - parent[k])
    moved = set(np.nonzero(d.max(axis=1))[0]) if d.ndim == 2 else set(np.nonzero(d)[0])
    assert moved == (rows if k == "model.embed_tokens.weight" else set()), (k, sorted(moved)[:5])
log = [l.split(",") for l in open("c500x/train_log.csv").read().split("\n")[1:] if l]
assert float(log[-1][4]) < float(log[0][4]), (log[0], log[-1])
r, f = json.load(open("c500x.json")), json.load(open("full.json"))
eff = r["efficiency"]
per_user = 2 * 2 * 16 * 4 * 4 * (2 + 20 * 3)
assert abs(eff["sigma"] - per_user) < 1e-6, (eff["sigma"], per_user)
print("compress500x: 32 adapters, base frozen (only the 2 compression rows of embed moved), loss %s -> %s, "
      "sigma %d B/user (gamma %.1f %%), recall@10 %.4f (its finetune parent %.4f)"
      % (log[0][4], log[-1][4], per_user, eff["gamma"], r["recall@10"], f["recall@10"]))
PYEOF

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
import json, os, sys
import numpy as np
sys.path.insert(0, os.environ["ST_HELPERS"])
from st_read import tensors
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
"$B" bench --preset tiny --method full,skiplayers:keep=1,skiplayers,gist:tokens=3,anllm,anllm:items=10,pod,pod:regs=3,words=20,compress500x:tokens=3,rank=4 \
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
assert [r["method"] for r in rows[4:]] == ["anllm"] * 2 + ["pod"] * 2 + ["compress500x"], [r["method"] for r in rows]
assert kv[4] == bptl * N * ((L - 4 * 23) + 23 + W * G) and rows[4]["policy"] == "", (kv, rows[4]["policy"])
assert kv[5] == bptl * N * ((L - 4 * 10) + 10 + W * G) and rows[5]["policy"] == "anllm:items=10", kv
assert kv[6] == bptl * N * (L - 47 + 1 + W * G) and rows[6]["policy"] == "pod:regs=1" and rows[6]["prefix_regs"] == "1", kv
assert kv[7] == bptl * N * (L - 20 + 3 + W * G) and rows[7]["policy"] == "pod:regs=3,words=20", (kv, rows[7]["policy"])
assert kv[8] == bptl * N * (3 + W * G) and rows[8]["policy"] == "compress500x:tokens=3,rank=4", (kv, rows[8]["policy"])
print("bench: KV bytes of full, skiplayers, gist, anllm, pod, compress500x = their closed forms:", kv)
PYEOF
for m in gist:tokens=0 compress500x:rank=0 compress500x:window=2 skiplayers:layers=2 skiplayers:keep=x anllm:items=0 anllm:keep=2 pod:regs=0 pod:words=x; do
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
set +e; "$B" eval --model c500x --data syn --draft full --out bad_spec.json > /dev/null 2> bad_spec.log; rc=$?; set -e
[ $rc -eq 1 ] && grep -q "the target is a compress500x model" bad_spec.log && [ ! -e bad_spec.json ] \
    || { cat bad_spec.log; fail "speculative compress500x: exit $rc"; }
# forward's plain prefill does not apply these methods' masks or adapters: refused, nothing written.
for m in gist anllm c500x; do
    set +e; "$B" forward --model "$m" --tokens "1 2 3" --out bad_fw.h5 > /dev/null 2> bad_fw.log; rc=$?; set -e
    [ $rc -eq 2 ] && grep -q "which this plain prefill does not apply" bad_fw.log && [ ! -e bad_fw.h5 ] \
        || { cat bad_fw.log; fail "forward on the $m model: exit $rc"; }
done

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
bad c5noinit "needs --init DIR" --preset tiny --method compress500x --epochs 1
bad c5rank0 "--lora-rank 0" --init full --method compress500x --lora-rank 0 --epochs 1
bad c5k "--method compress500x" --init full --method compress500x --k 1 --epochs 1
bad c5tok0 "compression token" --init full --method compress500x --suffix-regs 0 --epochs 1
bad c5gist "is a gist model" --init gist --method compress500x --epochs 1
bad c5other "--lora-rank and --lora-alpha are compress500x settings" --init full --method gist --lora-rank 4 --epochs 1
echo "check_methods: ok"
