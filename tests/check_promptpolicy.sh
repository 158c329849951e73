#!/usr/bin/env bash
# check_promptpolicy.sh: `earnest eval --prompt-policy` end to end on the
# synthetic default dataset (its first 50 test users), with a random tiny full
# model and a tiny LM trained here (`earnest train --template tiger`, capped at
# 3 seconds):
#  - none, truncate with more items than any history, selective:ratio=0 rank
#    exactly as no policy (byte-identical rankings);
#  - truncate:items=3 ranks exactly as `--max-history 3` (the prompt is rebuilt
#    by the dataset's template from the last 3 items), with fewer prompt tokens
#    and gamma > 0 against whole histories;
#  - selective (the evaluated model, and lm=DIR) keeps n - floor(0.35 n) items
#    per user, records its spec, and its scoring time as prompt_policy_ms;
#  - a prompt policy combines with --kv-policy streaming:rerotate=1;
#  - efficiency.omega is null without --baseline;
#  - bad input (unknown policy or key, malformed key=value, items < 1, ratio
#    outside [0, 1), an EARN model or LM scoring, a missing lm, MostPop):
#    exit 2, a message naming --prompt-policy, nothing written.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out syn > /dev/null
"$B" init --preset tiny --data syn --out m_full > /dev/null
"$B" init --preset tiny --data syn --method earn --k 1 --prefix-regs 1 --suffix-regs 2 --out m_earn > /dev/null
"$B" train --data syn --preset tiny --method finetune --template tiger --epochs 1 --max-minutes 0.05 \
    --eval-users 10 --quiet --out lm > /dev/null 2>&1 || fail "training the scoring LM"

ev() { # OUT_STEM [eval flags...]
    local o=$1; shift
    "$B" eval --model m_full --data syn --out "$o.json" --rankings "$o.tsv" --batch 7 --limit-users 50 "$@" > /dev/null 2> "$o.log" \
        || { cat "$o.log"; fail "eval $*"; }
}
ev e0
ev none --prompt-policy none
ev t_all --prompt-policy truncate:items=1000
ev s_zero --prompt-policy selective:ratio=0,lm=lm
for o in none t_all s_zero; do cmp -s e0.tsv $o.tsv || fail "$o ranks differently from no policy"; done
ev t3 --prompt-policy truncate:items=3
ev h3 --max-history 3
cmp -s t3.tsv h3.tsv || fail "truncate:items=3 ranks differently from --max-history 3"
ev sel_self --prompt-policy selective
ev sel_lm --prompt-policy selective:ratio=0.35,lm=lm
ev sel_rot --prompt-policy selective:lm=lm --kv-policy streaming:tokens=16,rerotate=1

$PY - <<'PYEOF' || fail "python checks"
import json, math
e0, t3, h3 = (json.load(open(f + ".json")) for f in ("e0", "t3", "h3"))
assert e0["efficiency"]["omega"] is None, e0["efficiency"]
assert e0["prompt_policy"]["name"] == "none", e0["prompt_policy"]
assert t3["prompt_policy"] == {"name": "truncate", "spec": "truncate:items=3", "items": 3,
                               "history_items": e0["prompt_policy"]["history_items"], "history_items_kept": 3.0}, t3
assert t3["efficiency"]["prompt_tokens"] == h3["efficiency"]["prompt_tokens"] < e0["efficiency"]["prompt_tokens"]
assert t3["efficiency"]["gamma"] > 0 and h3["efficiency"]["gamma"] == 0, (t3["efficiency"], h3["efficiency"])
assert t3["efficiency"]["sigma_full"] == e0["efficiency"]["sigma_full"]
n = e0["n_users"]
# Exact kept counts: the test histories (train + valid, last 20) from the dataset files.
def seqs(f):
    d = {}
    for line in open("syn/" + f):
        v = [int(x) for x in line.split()]
        d[v[0]] = v[1:]
    return d
tr, va, te = seqs("train.txt"), seqs("valid.txt"), seqs("test.txt")
lens = [len((tr.get(u, []) + va.get(u, []))[-20:]) for u in sorted(te) if te[u]][:50]
assert len(lens) == n, (len(lens), n)
assert abs(e0["prompt_policy"]["history_items"] - sum(lens) / n) < 1e-6
want = sum(k - math.floor(0.35 * k + 1e-9) for k in lens) / n
for f in ("sel_self", "sel_lm"):
    got = json.load(open(f + ".json"))["prompt_policy"]["history_items_kept"]
    assert abs(got - want) < 1e-6, (f, got, want)
print("prompt policies ok: %d users, %.2f history items/user; truncate:items=3 prompt tokens %d -> %d "
      "(gamma %.1f%%), selective(lm) keeps %.2f items, %.1f ms of scoring; recall@10 %.4f / %.4f / %.4f" % (
      n, e0["prompt_policy"]["history_items"], e0["efficiency"]["prompt_tokens"], t3["efficiency"]["prompt_tokens"],
      t3["efficiency"]["gamma"], json.load(open("sel_lm.json"))["prompt_policy"]["history_items_kept"],
      json.load(open("sel_lm.json"))["efficiency"]["prompt_policy_ms"], e0["recall@10"], t3["recall@10"],
      json.load(open("sel_lm.json"))["recall@10"]))
PYEOF


# Bad input: exit 2, the flag named, nothing written.
bad() { # NEEDLE eval-args...
    local needle=$1; shift
    set +e
    "$B" eval --data syn --out bad.json --rankings bad.tsv "$@" > /dev/null 2> bad.log; local rc=$?
    set -e
    [ $rc = 2 ] || { cat bad.log; fail "$* -> rc $rc, want 2"; }
    grep -q -- "--prompt-policy" bad.log && grep -qF -- "$needle" bad.log || { cat bad.log; fail "$*: message"; }
    [ -z "$(ls bad.* 2>/dev/null | grep -v bad.log)" ] || fail "$*: wrote $(ls bad.*)"
}
bad "unknown prompt policy 'trunc'" --model m_full --prompt-policy trunc
bad "'items' is not key=value" --model m_full --prompt-policy truncate:items
bad "empty field" --model m_full --prompt-policy truncate:items=3,
bad "unknown key 'ratio'" --model m_full --prompt-policy truncate:ratio=0.3
bad "unknown key 'items'" --model m_full --prompt-policy selective:items=3
bad "items '0'" --model m_full --prompt-policy truncate:items=0
bad "items 'few'" --model m_full --prompt-policy truncate:items=few
bad "ratio '1'" --model m_full --prompt-policy selective:ratio=1
bad "ratio '-0.5'" --model m_full --prompt-policy selective:ratio=-0.5
bad "ratio 'half'" --model m_full --prompt-policy selective:ratio=half
bad "whose method is earn" --model m_earn --prompt-policy selective
bad "whose method is earn" --model m_full --prompt-policy selective:lm=m_earn
bad "lm 'nolm' has no readable config.json" --model m_full --prompt-policy selective:lm=nolm
bad "needs --model" --method mostpop --prompt-policy truncate:items=3
echo "check_promptpolicy ok"
