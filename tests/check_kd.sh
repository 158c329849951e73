#!/usr/bin/env bash
# check_kd.sh: draft distillation end to end on the default synthetic dataset
# (issue 12, item 1):
#  - a tiny target -> `earnest teacher` (the first 4 users' train samples,
#    8 beams, to stay short) ->
#    the file is read back by python from the layout documented in
#    experiments/teacher.h: header fields, exact size, records sha256, ground
#    truth = the item's code in codes.tsv, beams are item codes, scores
#    descending, per-step log-probabilities sum to the score (1e-3) and equal
#    the node distributions at the beam tokens (1e-6), node probabilities sum
#    to <= 1;
#  - a draft trained for a few steps with every loss (sft, wordkd, tvdkd,
#    seqkd, atspeed-s, atspeed-r): finite losses, KD settings in
#    train_args.json; the atspeed-s draft under `eval --draft --verify strict`
#    ranks exactly as the plain target on 50 test users (codes and order;
#    scores within 1e-4), and relaxed verification runs;
#  - a KD run killed after update 3 and resumed ends with the same weights
#    and kd_log.csv as an uninterrupted one;
#  - self-distillation: a draft distilled from a teacher file made from
#    itself has KD term 0 (< 1e-5) at its first update, on the ground-truth
#    rows (wordkd, tvdkd) and on the beam rows appended to the packs
#    (atspeed-r): the student's KD rows are the teacher file's nodes;
#  - bad input: a teacher file from another dataset, a truncated one, a
#    damaged one, not a teacher file, a model directory instead of a file, a
#    target that does not fit the data,
#    --kd without --teacher, --teacher without --method draft, --kd-alpha out
#    of range: nonzero exit, a message naming the file or flag, nothing written.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out syn > /dev/null
"$B" init --preset tiny --data syn --std 0.15 --seed 3 --out tgt > /dev/null
"$B" teacher --model tgt --data syn --template tiger --users 4 --beam 8 --out t.bin --quiet || fail "earnest teacher"

$PY - <<'PYEOF' || fail "teacher file checks"
import hashlib, json, math, struct
raw = open("t.bin", "rb").read()
magic = b"earnest-teacher 1\n"
assert raw.startswith(magic)
nl = raw.index(b"\n", len(magic))
h = json.loads(raw[len(magic):nl])
rec = raw[nl + 1:]
assert h["format"] == "earnest-teacher" and h["version"] == 1
assert len(rec) == h["records_bytes"] and hashlib.sha256(rec).hexdigest() == h["records_sha256"]
vocab = [l.rstrip("\n") for l in open("tgt/vocab.txt")]
assert h["vocab"]["size"] == len(vocab)
codes = {}
for line in open("syn/codes.tsv"):
    i, c = line.rstrip("\n").split("\t")
    codes[int(i)] = c
code_set = set(codes.values())
train = {}
for line in open("syn/train.txt"):
    f = [int(x) for x in line.split()]
    train[f[0]] = f[1:]
L, lt = h["levels"], h["level_tokens"]
at, n_rec, users = 0, 0, set()
def ints(n):
    global at
    v = struct.unpack_from("<%di" % n, rec, at); at += 4 * n; return list(v)
def floats(n):
    global at
    v = struct.unpack_from("<%df" % n, rec, at); at += 4 * n; return list(v)
while at < len(rec):
    user, pos, item, nb, nn, zero = ints(6)
    assert zero == 0 and 1 <= nb <= h["beam"] and train[user][pos] == item, (user, pos, item)
    users.add(user)
    gt = ints(L)
    assert "".join(vocab[t] for t in gt) == codes[item]
    beams = [ints(L) for _ in range(nb)]
    scores = floats(nb)
    steps = [floats(L) for _ in range(nb)]
    gt_node = ints(L)
    beam_node = [ints(L) for _ in range(nb)]
    levels = ints(nn)
    nodes = [floats(len(lt[lv])) for lv in levels]
    for b in range(nb):
        assert "".join(vocab[t] for t in beams[b]) in code_set
        assert b == 0 or scores[b] <= scores[b - 1] + 1e-6
        assert abs(sum(steps[b]) - scores[b]) <= 1e-3, (sum(steps[b]), scores[b])
        for j in range(L):
            q = beam_node[b][j]
            assert levels[q] == j
            assert abs(nodes[q][lt[j].index(beams[b][j])] - steps[b][j]) <= 1e-6
    for j in range(L):
        assert levels[gt_node[j]] == j
    assert gt_node[0] == beam_node[0][0]   # one root
    for lp in nodes:
        assert sum(math.exp(x) for x in lp) <= 1 + 1e-4
    n_rec += 1
assert at == len(rec) and n_rec == h["samples"] and len(users) == h["users"] == 4
print(f"teacher file: {n_rec} records of {len(users)} users read back; layout, sums and node mapping agree")
PYEOF

# ---- a draft per loss, a few steps each -------------------------------------
T=(--data syn --method draft --teacher t.bin --template tiger --epochs 1 --eval-users 10 --batch-tokens 1500 --quiet)
for kd in sft wordkd tvdkd seqkd atspeed-s atspeed-r; do
    "$B" train "${T[@]}" --kd "$kd" --kd-temp 1.5 --out "d_$kd" > "d_$kd.log" 2>&1 || { cat "d_$kd.log"; fail "train --kd $kd"; }
    $PY - "d_$kd" "$kd" <<'PYEOF' || fail "train --kd $kd: outputs"
import csv, json, math, sys
d, kd = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f"{d}/train_log.csv")))
assert len(rows) >= 1 and all(math.isfinite(float(r["loss"])) for r in rows), rows
a = json.load(open(f"{d}/train_args.json"))
assert a["kd"] == kd and a["teacher"] == "t.bin" and abs(a["kd_alpha"] - 0.7) < 1e-6 and a["teacher_records_sha256"]
assert json.load(open(f"{d}/config.json"))["earnest"]["method"] == "finetune"
PYEOF
done
echo "drafts trained with sft, wordkd, tvdkd, seqkd, atspeed-s, atspeed-r"

E=(--data syn --template tiger --limit-users 50)
"$B" eval --model tgt "${E[@]}" --out plain.json --rankings plain.tsv > /dev/null 2>&1 || fail "plain eval"
"$B" eval --model tgt "${E[@]}" --out strict.json --rankings strict.tsv --draft d_atspeed-s --verify strict \
    > /dev/null 2>&1 || fail "eval --draft (KD draft) strict"
"$B" eval --model tgt "${E[@]}" --out relaxed.json --rankings relaxed.tsv --draft d_atspeed-r --verify relaxed \
    > /dev/null 2>&1 || fail "eval --draft (KD draft) relaxed"
$PY - <<'PYEOF' || fail "strict == plain"
rows = lambda p: [l.rstrip("\n").split("\t") for l in open(p)]
A, S = rows("plain.tsv"), rows("strict.tsv")
assert len(A) == len(S) == 50 * 20, (len(A), len(S))
for x, y in zip(A, S):
    assert x[:3] == y[:3] and abs(float(x[3]) - float(y[3])) <= 1e-4, (x, y)
assert len(rows("relaxed.tsv")) == 50 * 20
print("KD draft, strict verification: the target's exact rankings on 50 test users")
PYEOF

# ---- a killed KD run resumes to the same weights -------------------------------
R=(--data syn --method draft --teacher t.bin --kd atspeed-r --template tiger --epochs 2 --eval-users 5
   --batch-tokens 600 --threads 1 --quiet)
"$B" train "${R[@]}" --out ra > /dev/null 2>&1 || fail "train (uninterrupted)"
set +e; "$B" train "${R[@]}" --out rb --test-crash-after-step 3 > /dev/null 2>&1; set -e
"$B" train "${R[@]}" --out rb --resume > /dev/null 2>&1 || fail "train --resume (KD)"
cmp -s ra/model.safetensors rb/model.safetensors || fail "a resumed KD run ends with other weights"
cmp -s ra/kd_log.csv rb/kd_log.csv || fail "a resumed KD run has another kd_log.csv"
"$B" teacher --model tgt --data syn --template tiger --users 3 --beam 8 --out t_other.bin --quiet
"$B" train "${R[@]/t.bin/t_other.bin}" --out rb --resume > bad.out 2>&1 && fail "--resume with another teacher file"
grep -q "teacher" bad.out || { cat bad.out; fail "--resume with another teacher file: the message does not name it"; }
echo "KD run killed after update 3 and resumed: the same weights and kd_log.csv"

# ---- self-distillation: a model distilled from its own teacher file -----------
# The student's rows in the KD batch (ground truth, and the beams appended to the
# packs) must give exactly the distributions the teacher file holds for the same
# nodes (which come from the target's tree forward, checked against its beam
# search while writing): WordKD/TVDKD on the ground-truth rows and AtSpeed-R on
# the beam rows are then 0 up to float rounding at the first update.
"$B" teacher --model d_atspeed-s --data syn --template tiger --users 2 --beam 4 --out self.bin --quiet || fail "teacher (self)"
for kd in wordkd tvdkd atspeed-r; do
    "$B" train --data syn --method draft --init d_atspeed-s --teacher self.bin --kd "$kd" --template tiger --epochs 1 \
        --eval-users 5 --quiet --out "self_$kd" > /dev/null 2>&1 || fail "train --kd $kd (self)"
    $PY - "self_$kd/kd_log.csv" <<'PYEOF' || fail "self-distillation $kd: the KD term is not 0"
import csv, sys
r = next(csv.DictReader(open(sys.argv[1])))
assert float(r["kd"]) < 1e-5 and int(r["kd_rows"]) > 0 and float(r["ce"]) > 0.1, r
PYEOF
done
echo "self-distillation: the KD term is 0 (ground-truth rows: wordkd, tvdkd; beam rows: atspeed-r)"

# ---- bad input: nonzero exit, a clear message, nothing written ----------------
expect_fail() { # $1: output that must not appear, $2: pattern in the message, rest: the command
    local out="$1" pat="$2"; shift 2
    set +e; "$@" > bad.out 2>&1; local rc=$?; set -e
    [ "$rc" != 0 ] || fail "expected failure: $*"
    grep -qi -- "$pat" bad.out || { cat bad.out; fail "message lacks '$pat': $*"; }
    [ ! -e "$out" ] || fail "$out was written by a failing run: $*"
}
"$B" prepare synthetic --out syn2 --seed 9 > /dev/null
expect_fail x1 "dataset" "$B" train "${T[@]/syn/syn2}" --kd wordkd --out x1
head -c 5000 t.bin > trunc.bin
expect_fail x2 "truncated" "$B" train "${T[@]/t.bin/trunc.bin}" --kd wordkd --out x2
cp t.bin dmg.bin
printf 'X' | dd of=dmg.bin bs=1 seek=9000 conv=notrunc status=none
expect_fail x3 "damaged" "$B" train "${T[@]/t.bin/dmg.bin}" --kd wordkd --out x3
expect_fail x4 "not a teacher file" "$B" train "${T[@]/t.bin/syn\/train.txt}" --kd wordkd --out x4
expect_fail x8 "is a directory" "$B" train "${T[@]/t.bin/tgt}" --kd wordkd --out x8
expect_fail x5 "needs --teacher" "$B" train --data syn --method draft --kd atspeed-s --out x5
expect_fail x6 "go with --method draft" "$B" train --data syn --preset draft --teacher t.bin --out x6
expect_fail x7 "kd-alpha" "$B" train "${T[@]}" --kd wordkd --kd-alpha 1.5 --out x7
"$B" prepare synthetic --out small --users 30 --items 60 --levels 2 --codes 12 --seed 5 > /dev/null 2>&1
"$B" init --preset tiny --data small --seed 3 --out tgt_small > /dev/null
expect_fail t2.bin "does not fit" "$B" teacher --model tgt_small --data syn --out t2.bin --quiet
expect_fail t3.bin "model" "$B" teacher --model nonexistent --data syn --out t3.bin --quiet
ls | grep '\.tmp\.' > /dev/null && fail "temporary files left behind"
echo "bad input: clear errors, nothing written"
echo "check_kd: OK"
