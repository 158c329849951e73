#!/usr/bin/env bash
# check_train.sh: `earnest train` end to end on a tiny synthetic dataset:
#  - the files of a model directory (best checkpoint, vocab, logs, summary,
#    state) and their contents;
#  - an interrupted run resumed from its state reaches bitwise the same
#    weights, optimizer state and logs as an uninterrupted one: a SIGKILL at a
#    known update between state saves (mid-epoch 1, then again mid-epoch 2),
#    and a SIGTERM sent from outside (graceful: state saved, exit 130);
#  - --init from the converted stories260K grows its vocabulary and keeps its rows;
#  - bad input (unreadable dataset, k outside 1..N-1, registers that do not fit
#    the vocabulary, a checkpoint that does not fit the preset or the dataset,
#    changed options on --resume, an existing directory): a clear error,
#    nonzero exit, nothing created or overwritten.
set -u
: "${EARNEST_BIN:?EARNEST_BIN must name the earnest binary}"
: "${EARNEST_SHARED:?EARNEST_SHARED must name the shared mirror}"
TMP=$(mktemp -d /tmp/earnest_check_train.XXXXXX) || exit 1
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
E="$EARNEST_BIN"

"$E" train --help | grep -- "--resume" > /dev/null || fail "train --help does not describe --resume"

"$E" prepare synthetic --out "$TMP/data" --users 40 --items 40 --min-len 5 --max-len 24 --levels 2 --codes 6 \
    >"$TMP/prep.out" 2>&1 || { cat "$TMP/prep.out"; fail "prepare synthetic"; }

# The same command line for every run of the resume checks.
ARGS=(--data "$TMP/data" --preset tiny --method earn --k 2 --epochs 2 --threads 2 --batch-tokens 700
      --eval-users 12 --beam 5 --patience 0 --save-every 2 --quiet)

# ---- an uninterrupted run ---------------------------------------------------
"$E" train "${ARGS[@]}" --out "$TMP/a" >"$TMP/a.out" 2>&1 || { cat "$TMP/a.out"; fail "uninterrupted run"; }
for f in config.json model.safetensors vocab.txt train_log.csv eval_log.csv summary.json train_args.json state/LATEST; do
    [ -s "$TMP/a/$f" ] || fail "missing $TMP/a/$f"
done
leftovers=$(find "$TMP/a" -name '*.tmp.*' | head -n 3)
[ -z "$leftovers" ] || fail "temporary files left behind: $leftovers"
/usr/bin/python3 - "$TMP/a" <<'EOF' || fail "model directory contents"
import csv, json, sys
d = sys.argv[1]
c = json.load(open(d + "/config.json"))
ea = c["earnest"]
assert ea == {"method": "earn", "layer_split_k": 2, "prefix_regs": 1, "suffix_regs": 1, "template": "lcrec"}, ea
vocab = open(d + "/vocab.txt").read().split("\n")[:-1]
assert len(vocab) == c["vocab_size"], (len(vocab), c["vocab_size"])
assert vocab[:2] == ["<pad>", "<bos>"] and "<reg_pre_7>" in vocab and "<reg_suf_7>" in vocab
s = json.load(open(d + "/summary.json"))
assert s["stopped"] == "completed" and s["steps"] == s["total_steps"] > 4, s
assert s["tokens_per_epoch_packed"] < s["tokens_per_epoch_unpacked"], s
rows = list(csv.DictReader(open(d + "/train_log.csv")))
assert [int(r["step"]) for r in rows] == list(range(1, s["total_steps"] + 1))
assert all(float(r["loss"]) > 0 and float(r["tokens"]) > 0 for r in rows)
ev = list(csv.DictReader(open(d + "/eval_log.csv")))
assert [int(r["epoch"]) for r in ev] == [1, 2], ev
assert all(0 <= float(r["recall@10"]) <= 1 and int(r["users"]) == 12 for r in ev), ev
best = max(float(r["recall@10"]) for r in ev)
assert abs(best - s["best_valid_recall@10"]) < 1e-6, (best, s)
p = json.load(open(d + "/state/" + open(d + "/state/LATEST").read().strip() + "/progress.json"))
assert p["done"] and p["step"] == s["total_steps"], p
EOF
"$E" train "${ARGS[@]}" --out "$TMP/a" --resume >"$TMP/a2.out" 2>&1 || fail "--resume of a finished run should succeed"
grep -q "nothing to do" "$TMP/a2.out" || fail "--resume of a finished run: no 'nothing to do' note"

same_as_a() { # $1: directory that must match the uninterrupted run
    cmp -s "$TMP/a/model.safetensors" "$1/model.safetensors" || fail "$2: best checkpoint differs"
    cmp -s "$TMP/a/state/"*/model.safetensors "$1/state/"*/model.safetensors || fail "$2: final weights differ"
    cmp -s "$TMP/a/state/"*/optimizer.bin "$1/state/"*/optimizer.bin || fail "$2: optimizer state differs"
    # logs: every column but the wall-clock ones
    cmp -s <(cut -d, -f1-8 "$TMP/a/train_log.csv") <(cut -d, -f1-8 "$1/train_log.csv") || fail "$2: train_log.csv differs"
    cmp -s <(cut -d, -f1-8 "$TMP/a/eval_log.csv") <(cut -d, -f1-8 "$1/eval_log.csv") || fail "$2: eval_log.csv differs"
}
total=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['total_steps'])" "$TMP/a/summary.json")
per_epoch=$(awk -F, 'NR > 1 && $2 == 1' "$TMP/a/train_log.csv" | wc -l)
[ "$per_epoch" -ge 4 ] && [ "$total" -gt "$per_epoch" ] || fail "need >= 4 updates per epoch and 2 epochs ($per_epoch, $total)"

# ---- SIGKILL between saves, mid-epoch 1 and again mid-epoch 2 -----------------
crash1=3                        # saves happen after updates 2, 4, ...: update 3 is lost and redone
crash2=$((per_epoch + 3))       # in epoch 2
{ "$E" train "${ARGS[@]}" --out "$TMP/b" --test-crash-after-step $crash1 >"$TMP/b1.out" 2>&1; rc=$?; } 2>/dev/null
[ "$rc" = 137 ] || { cat "$TMP/b1.out"; fail "crash run: exit $rc, want 137 (SIGKILL)"; }
[ ! -e "$TMP/b/summary.json" ] || fail "crash run wrote a summary"
{ "$E" train "${ARGS[@]}" --out "$TMP/b" --resume --test-crash-after-step $crash2 >"$TMP/b2.out" 2>&1; rc=$?; } 2>/dev/null
[ "$rc" = 137 ] || { cat "$TMP/b2.out"; fail "second crash run: exit $rc, want 137"; }
"$E" train "${ARGS[@]}" --out "$TMP/b" --resume >"$TMP/b3.out" 2>&1 || { cat "$TMP/b3.out"; fail "resume"; }
same_as_a "$TMP/b" "killed at updates $crash1 and $crash2, resumed twice"
echo "resume after SIGKILL at updates $crash1 and $crash2 (of $total): weights, optimizer and logs bitwise identical"

# ---- SIGTERM from outside: graceful stop, state saved, exit 130 --------------
"$E" train "${ARGS[@]}" --out "$TMP/c" --save-every 1000 >"$TMP/c1.out" 2>&1 &
pid=$!
for _ in $(seq 1 400); do
    [ -f "$TMP/c/train_log.csv" ] && [ "$(wc -l <"$TMP/c/train_log.csv")" -ge 3 ] && break
    sleep 0.02
done
kill -TERM $pid 2>/dev/null
wait $pid; rc=$?
if [ "$rc" = 130 ]; then
    grep -q "resume" "$TMP/c1.out" || fail "SIGTERM: no note on --resume"
    "$E" train "${ARGS[@]}" --out "$TMP/c" --resume >"$TMP/c2.out" 2>&1 || { cat "$TMP/c2.out"; fail "resume after SIGTERM"; }
    same_as_a "$TMP/c" "SIGTERM then resume"
    echo "resume after SIGTERM: bitwise identical"
elif [ "$rc" = 0 ]; then
    echo "note: the SIGTERM run finished before the signal arrived; compared as an uninterrupted run"
    same_as_a "$TMP/c" "SIGTERM run (finished first)"
else
    cat "$TMP/c1.out"; fail "SIGTERM run: exit $rc, want 130"
fi

# ---- --max-minutes: stop mid-run (validate, save, summary), --resume finishes -
# The extra validation may pick another best checkpoint; the final weights must not change.
"$E" train "${ARGS[@]}" --out "$TMP/t" --max-minutes 0.005 >"$TMP/t1.out" 2>&1 || { cat "$TMP/t1.out"; fail "--max-minutes run"; }
if grep -q '"time_limit"' "$TMP/t/summary.json"; then
    "$E" train "${ARGS[@]}" --out "$TMP/t" --resume >"$TMP/t2.out" 2>&1 || { cat "$TMP/t2.out"; fail "resume after --max-minutes"; }
    grep -q '"completed"' "$TMP/t/summary.json" || fail "resume after --max-minutes did not complete"
    cmp -s "$TMP/a/state/"*/model.safetensors "$TMP/t/state/"*/model.safetensors || fail "--max-minutes + resume: final weights differ"
    echo "--max-minutes stop then resume: final weights bitwise identical"
else
    echo "note: the --max-minutes run finished within 0.3 s"
fi

# ---- --init from a converted llama2.c model: vocabulary growth ---------------
"$E" convert --llama2c "$EARNEST_SHARED/models/stories260K/stories260K.bin" \
    --tokenizer "$EARNEST_SHARED/models/stories260K/tok512.bin" --out "$TMP/st" >/dev/null 2>&1 || fail "convert"
"$E" train --data "$TMP/data" --init "$TMP/st" --method finetune --epochs 1 --lr 1e-9 --threads 2 \
    --eval-users 4 --beam 3 --batch-tokens 4000 --quiet --out "$TMP/g" >"$TMP/g.out" 2>&1 || { cat "$TMP/g.out"; fail "--init stories260K"; }
grep -q "grew its vocabulary from 512" "$TMP/g.out" || fail "--init stories260K: no note on the vocabulary growth"
/usr/bin/python3 - "$TMP/st" "$TMP/g" <<'EOF' || fail "--init stories260K: grown checkpoint"
import json, struct, sys
import numpy as np
def load(d):
    raw = open(d + "/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4").reshape(v["shape"])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
ca, cb = (json.load(open(d + "/config.json")) for d in sys.argv[1:])
vocab = open(sys.argv[2] + "/vocab.txt").read().split("\n")[:-1]
assert cb["vocab_size"] == len(vocab) > 512 and vocab[:512] == ["<orig_%d>" % i for i in range(512)], cb["vocab_size"]
assert vocab[512:514] == ["<pad>", "<bos>"], vocab[512:514]
for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"):
    assert ca[k] == cb[k], k
ea, eb = a["model.embed_tokens.weight"], b["model.embed_tokens.weight"]
assert eb.shape == (len(vocab), ca["hidden_size"])
# lr 1e-9: the old rows are kept (to float noise), the new rows are random at the old rows' scale
assert np.abs(eb[:512] - ea).max() < 1e-5, np.abs(eb[:512] - ea).max()
rms_old, rms_new = np.sqrt((ea ** 2).mean()), np.sqrt((eb[512:] ** 2).mean())
assert 0.7 < rms_new / rms_old < 1.3, (rms_old, rms_new)
for k in a:
    if k != "model.embed_tokens.weight":
        assert np.abs(a[k] - b[k]).max() < 1e-5, k
EOF
echo "--init stories260K: vocabulary grown, old rows kept"

# ---- bad input: clear error, nothing created or overwritten ------------------
snapshot() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 md5sum); }
expect_fail() { # $1: output dir that must not appear, $2: pattern in the message, rest: the command
    local out="$1" pat="$2"; shift 2
    "$@" >"$TMP/bad.out" 2>&1; local rc=$?
    [ "$rc" != 0 ] || fail "expected failure: $*"
    grep -qi -- "$pat" "$TMP/bad.out" || { cat "$TMP/bad.out"; fail "message lacks '$pat': $*"; }
    [ -z "$out" ] || [ ! -e "$out" ] || fail "$out was created by a failing run: $*"
}
T=(--preset tiny --epochs 1 --threads 2 --quiet)
expect_fail "$TMP/x1" "$TMP/nonexistent" "$E" train --data "$TMP/nonexistent" "${T[@]}" --out "$TMP/x1"
cp -r "$TMP/data" "$TMP/bad_data"
sed -i '3s/.*/3 1 x 2/' "$TMP/bad_data/train.txt"
expect_fail "$TMP/x2" "train.txt:3" "$E" train --data "$TMP/bad_data" "${T[@]}" --out "$TMP/x2"
expect_fail "$TMP/x3" "1..3" "$E" train --data "$TMP/data" "${T[@]}" --method earn --k 4 --out "$TMP/x3"
expect_fail "$TMP/x4" "--k" "$E" train --data "$TMP/data" "${T[@]}" --method earn --k 0 --out "$TMP/x4"
expect_fail "$TMP/x5" "suffix register" "$E" train --data "$TMP/data" "${T[@]}" --method earn --suffix-regs 0 --out "$TMP/x5"
expect_fail "$TMP/x6" "does not fit" "$E" train --data "$TMP/data" --init "$TMP/a" --preset small --epochs 1 --quiet --out "$TMP/x6"
expect_fail "$TMP/x7" "fit the vocabulary" "$E" train --data "$TMP/data" --init "$TMP/a" --method earn --prefix-regs 9 --epochs 1 --quiet --out "$TMP/x7"
expect_fail "$TMP/x8" "unknown method" "$E" train --data "$TMP/data" "${T[@]}" --method lora --out "$TMP/x8"
# a checkpoint made for another dataset (its vocabulary lacks this dataset's codes)
"$E" prepare synthetic --out "$TMP/data2" --users 30 --items 60 --levels 2 --codes 12 --seed 5 >/dev/null 2>&1 || fail "prepare data2"
expect_fail "$TMP/x9" "does not fit the dataset" "$E" train --data "$TMP/data2" --init "$TMP/a" --method earn --epochs 1 --quiet --out "$TMP/x9"
# existing directories are never overwritten by a fresh run or a mismatched resume
before=$(snapshot "$TMP/a")
expect_fail "" "--resume" "$E" train "${ARGS[@]}" --out "$TMP/a"
expect_fail "" "lr" "$E" train "${ARGS[@]}" --lr 0.002 --out "$TMP/a" --resume
expect_fail "" "--resume" "$E" train "${ARGS[@]}" --out "$TMP/data" --resume
[ "$before" = "$(snapshot "$TMP/a")" ] || fail "a failing run changed $TMP/a"
echo "bad input: clear errors, nothing created or overwritten"
echo "check_train: OK"
