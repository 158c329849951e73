#!/usr/bin/env bash
# check_eval.sh: `earnest eval` end to end on a small synthetic dataset with
# random tiny models (full and EARN) and MostPop:
#  - the JSON has the contract's keys, metrics in [0, 1] and monotone in K;
#  - the rankings TSV has one line per beam, ranks 1..20, scores descending,
#    every code an item's code; Recall/NDCG recomputed here in Python from the
#    TSV, test.txt and codes.tsv equal the JSON (1e-9), MostPop's too;
#  - EARN's gamma equals the closed form computed here from the prompt lengths;
#    omega is a number with --baseline, null without;
#  - bad input (vocabulary of the wrong size, unknown split, baseline of other
#    work) fails with a clear message and writes nothing.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out syn --users 200 --items 90 --codes 6 --levels 3 > /dev/null
"$B" init --preset tiny --data syn --out m_full > /dev/null
"$B" init --preset tiny --data syn --method earn --k 1 --prefix-regs 1 --suffix-regs 2 --out m_earn > /dev/null
[ -f m_full/vocab.txt ] || fail "init --data wrote no vocab.txt"

"$B" eval --model m_full --data syn --out e_full.json --rankings r_full.tsv --batch 7 2> full.log > /dev/null \
    || { cat full.log; fail "eval full failed"; }
grep -q "users" full.log || fail "no progress on stderr"
"$B" eval --model m_earn --data syn --out e_earn.json --rankings r_earn.tsv --baseline e_full.json > /dev/null 2>&1 \
    || fail "eval earn failed"
"$B" eval --method mostpop --data syn --out e_mp.json --rankings r_mp.tsv > /dev/null 2>&1 || fail "eval mostpop failed"
"$B" eval --model m_full --data syn --split valid --limit-users 30 --beam 5 --out e_valid.json > /dev/null 2>&1 \
    || fail "eval valid failed"

$PY - <<'PYEOF' || fail "python checks"
import json, math
def load_split(path):
    out = {}
    for line in open(path):
        f = line.split()
        out[int(f[0])] = [int(x) for x in f[1:]]
    return out
test = load_split("syn/test.txt")
code = {}
for line in open("syn/codes.tsv"):
    i, c = line.rstrip("\n").split("\t")
    code[int(i)] = c
codes = set(code.values())
users = [u for u in sorted(test) if test[u]]

def metrics(rank):  # rank: user -> [codes in order]
    res = {}
    for K in (1, 5, 10, 20):
        rs, ns = 0.0, 0.0
        for u in users:
            G = sorted(set(test[u]))
            gc = [code[g] for g in G]
            top = rank.get(u, [])[:K]
            rs += sum(1 for c in gc if c in top) / len(G)
            dcg = sum(1 / math.log2(j + 2) for j, c in enumerate(top) if c in gc)
            idcg = sum(1 / math.log2(j + 2) for j in range(min(len(G), K)))
            ns += dcg / idcg
        res["recall@%d" % K] = rs / len(users)
        res["ndcg@%d" % K] = ns / len(users)
    return res

def read_rank(path):
    rank, last = {}, {}
    for line in open(path):
        u, r, c, s = line.rstrip("\n").split("\t")
        u, r, s = int(u), int(r), float(s)
        assert c in codes, c
        lst = rank.setdefault(u, [])
        assert r == len(lst) + 1, (u, r)
        assert u not in last or s <= last[u] + 1e-9, (u, r)
        last[u] = s
        lst.append(c)
    for u, lst in rank.items():
        assert len(lst) == 20 and len(set(lst)) == 20, u
    assert sorted(rank) == users, "rankings users != test users with targets"
    return rank

for name, tsv in (("e_full.json", "r_full.tsv"), ("e_earn.json", "r_earn.tsv"), ("e_mp.json", "r_mp.tsv")):
    e = json.load(open(name))
    for key in ("method", "split", "n_users", "mostpop"):
        assert key in e, (name, key)
    assert e["split"] == "test" and e["n_users"] == len(users), name
    m = metrics(read_rank(tsv))
    for k, v in m.items():
        assert 0 <= e[k] <= 1 and abs(e[k] - v) < 1e-9, (name, k, e[k], v)
    for a, b in ((1, 5), (5, 10), (10, 20)):
        assert e["recall@%d" % a] <= e["recall@%d" % b] + 1e-12, name
    mp = json.load(open("e_mp.json"))
    for k in m:
        assert abs(e["mostpop"][k] - mp[k]) < 1e-12, (name, k)

full, earn = json.load(open("e_full.json")), json.load(open("e_earn.json"))
assert full["method"] == "finetune" and earn["method"] == "earn" and json.load(open("e_mp.json"))["method"] == "mostpop"
for e in (full, earn):
    f = e["efficiency"]
    for k in ("prefill_ms", "decode_ms", "tau", "sigma", "gamma"):
        assert f[k] >= 0, k
    assert f["generated_tokens"] == len(users) * 20 * 4
assert abs(full["efficiency"]["gamma"]) < 1e-9, full["efficiency"]["gamma"]
assert earn["efficiency"]["omega"] is not None and full["efficiency"]["omega"] is None
# gamma closed form: tiny = 4 layers, 2 KV heads of 16; EARN k=1, r=3; W=20, G=3.
# Prompt tokens without registers per user, from the prompt tokens the full model read.
bptl = 2 * 2 * 16 * 4
Ls_total = full["efficiency"]["prompt_tokens"]
n = len(users)
sig_full = bptl * 4 * (Ls_total + n * 20 * 3)
sig_earn = bptl * (1 * Ls_total + 4 * n * (3 + 20 * 3))
assert abs(earn["efficiency"]["gamma"] - 100 * (1 - sig_earn / sig_full)) < 1e-6, earn["efficiency"]["gamma"]
assert abs(earn["efficiency"]["sigma"] / (sig_earn / n) - 1) < 1e-8, earn["efficiency"]["sigma"]
v = json.load(open("e_valid.json"))
assert v["split"] == "valid" and v["n_users"] == 30 and v["beam"] == 5
print("eval checks ok: %d users, full recall@10 %.4f, earn %.4f, mostpop %.4f, gamma %.2f%%" % (
    n, full["recall@10"], earn["recall@10"], full["mostpop"]["recall@10"], earn["efficiency"]["gamma"]))
PYEOF

# Bad input: clear message, nonzero exit, nothing written.
"$B" init --preset tiny --vocab-size 50 --out m_bad > /dev/null
if "$B" eval --model m_bad --data syn --out bad.json 2> bad.log; then fail "eval accepted a model of another vocab size"; fi
grep -q "vocab_size 50" bad.log || { cat bad.log; fail "vocab size message"; }
[ ! -e bad.json ] || fail "bad.json written on failure"
if "$B" eval --model m_full --data syn --split train --out bad.json 2> bad.log; then fail "split train accepted"; fi
grep -q -- "--split" bad.log || fail "split message"
if "$B" eval --model m_earn --data syn --split valid --out bad.json --baseline e_full.json 2> bad.log; then
    fail "baseline of other work accepted"; fi
grep -q "not the same work" bad.log || { cat bad.log; fail "baseline message"; }
[ ! -e bad.json ] || fail "bad.json written on failure"
# --device cuda without a GPU (or without the CUDA build) is refused before any work (exit 2)
if ! nvidia-smi -L >/dev/null 2>&1; then
    set +e
    "$B" eval --model m_full --data syn --device cuda --out bad.json 2> bad.log; rc=$?
    set -e
    [ $rc = 2 ] && grep -qE "this build has no CUDA runtime|--device cuda: no (usable )?CUDA device" bad.log ||
        { cat bad.log; fail "--device cuda: rc $rc"; }
    [ ! -e bad.json ] || fail "bad.json written for --device cuda"
fi
grep -q '"device": "cpu"' e_full.json || fail "efficiency.device of a cpu eval"
echo "check_eval ok"
