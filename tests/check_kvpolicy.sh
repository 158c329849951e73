#!/usr/bin/env bash
# check_kvpolicy.sh: `earnest eval --kv-policy` end to end on a small synthetic
# dataset with a random tiny full model (4 layers, 2 KV heads of 16):
#  - budget=1.0 (and a token budget larger than every prompt) gives rankings
#    identical to no policy, byte for byte, for every policy;
#  - every policy at a real budget runs, returns 20 codes per user, and reports
#    fewer KV bytes; StreamingLLM with tokens=8 reports exactly the kept bytes:
#    sigma = 2 * 2 * 16 * 4 B * 4 layers * (8 + 20 beams * 3 stored tokens);
#  - the JSON records the policy, its spec and its parameters;
#  - bad input (unknown policy, malformed key=value, unknown key, budget <= 0,
#    > 1 or not a number, budget and tokens together, a policy on an EARN model
#    or on MostPop): exit 2, a message naming --kv-policy, nothing written.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY=/usr/bin/python3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B" prepare synthetic --out syn --users 120 --items 90 --codes 6 --levels 3 > /dev/null
"$B" init --preset tiny --data syn --out m_full > /dev/null
"$B" init --preset tiny --data syn --method earn --k 1 --prefix-regs 1 --suffix-regs 2 --out m_earn > /dev/null

ev() { # OUT_STEM [eval flags...]
    local o=$1; shift
    "$B" eval --model m_full --data syn --out "$o.json" --rankings "$o.tsv" --batch 7 "$@" > /dev/null 2> "$o.log" \
        || { cat "$o.log"; fail "eval $*"; }
}
ev e0
for p in streaming h2o snapkv pyramidkv tova knorm random; do
    ev "one_$p" --kv-policy "$p:budget=1.0"
    cmp -s e0.tsv "one_$p.tsv" || fail "$p:budget=1.0 ranks differently from no policy"
    ev "big_$p" --kv-policy "$p:tokens=100000"
    cmp -s e0.tsv "big_$p.tsv" || fail "$p:tokens=100000 ranks differently from no policy"
    ev "cut_$p" --kv-policy "$p:budget=0.3"
done
ev snap --kv-policy snapkv:budget=0.1,window=8,pool=max,kernel=3
ev stream8 --kv-policy streaming:tokens=8
ev none --kv-policy none
cmp -s e0.tsv none.tsv || fail "--kv-policy none ranks differently"

$PY - <<'PYEOF' || fail "python checks"
import json
e0 = json.load(open("e0.json"))
s0 = e0["efficiency"]["sigma"]
assert e0["kv_policy"] == {"name": "none", "spec": "none"}, e0["kv_policy"]
n = e0["n_users"]
for p in ("streaming", "h2o", "snapkv", "pyramidkv", "tova", "knorm", "random"):
    one, cut = json.load(open("one_%s.json" % p)), json.load(open("cut_%s.json" % p))
    assert one["efficiency"]["sigma"] == s0, (p, one["efficiency"]["sigma"], s0)
    assert one["kv_policy"]["name"] == p and one["kv_policy"]["budget"] == 1.0, one["kv_policy"]
    assert cut["efficiency"]["sigma"] < s0 and cut["efficiency"]["gamma"] > 0, (p, cut["efficiency"])
    assert cut["n_users"] == n and cut["efficiency"]["generated_tokens"] == n * 20 * 4, p
    rows = {}
    for line in open("cut_%s.tsv" % p):
        rows[line.split("\t")[0]] = rows.get(line.split("\t")[0], 0) + 1
    assert len(rows) == n and set(rows.values()) == {20}, p
snap = json.load(open("snap.json"))["kv_policy"]
assert snap == {"name": "snapkv", "spec": "snapkv:budget=0.1,window=8,kernel=3,pool=max", "budget": 0.1,
                "window": 8, "kernel": 3, "pool": "max"}, snap
st = json.load(open("stream8.json"))
assert st["kv_policy"]["tokens"] == 8 and st["kv_policy"]["sink"] == 4, st["kv_policy"]
want = 2 * 2 * 16 * 4 * 4 * (8 + 20 * 3)
assert abs(st["efficiency"]["sigma"] - want) < 1e-6, (st["efficiency"]["sigma"], want)
print("kv policies ok: %d users, sigma %.0f B/user without policy, %.0f with streaming:tokens=8 (gamma %.1f%%), "
      "recall@10 %.4f -> %.4f" % (n, s0, st["efficiency"]["sigma"], st["efficiency"]["gamma"], e0["recall@10"],
                                  st["recall@10"]))
PYEOF

# Bad input: exit 2, the flag named, nothing written.
bad() { # NEEDLE eval-args...
    local needle=$1; shift
    set +e
    "$B" eval --data syn --out bad.json --rankings bad.tsv "$@" > /dev/null 2> bad.log; local rc=$?
    set -e
    [ $rc = 2 ] || { cat bad.log; fail "$* -> rc $rc, want 2"; }
    grep -q -- "--kv-policy" bad.log && grep -qF -- "$needle" bad.log || { cat bad.log; fail "$*: message"; }
    [ -z "$(ls bad.* 2>/dev/null | grep -v bad.log)" ] || fail "$*: wrote $(ls bad.*)"
}
bad "unknown policy 'snapk'" --model m_full --kv-policy snapk
bad "'budget' is not key=value" --model m_full --kv-policy snapkv:budget
bad "'=0.1' is not key=value" --model m_full --kv-policy snapkv:=0.1
bad "empty field" --model m_full --kv-policy snapkv:budget=0.1,
bad "unknown key 'windw'" --model m_full --kv-policy snapkv:windw=8
bad "unknown key 'window'" --model m_full --kv-policy streaming:window=8
bad "budget '0'" --model m_full --kv-policy h2o:budget=0
bad "budget '-0.2'" --model m_full --kv-policy h2o:budget=-0.2
bad "budget 'lots'" --model m_full --kv-policy tova:budget=lots
bad "budget '2'" --model m_full --kv-policy tova:budget=2
bad "tokens '0'" --model m_full --kv-policy knorm:tokens=0
bad "not both" --model m_full --kv-policy knorm:tokens=5,budget=0.5
bad "the method of m_earn is earn" --model m_earn --kv-policy snapkv:budget=0.5
bad "needs --model" --method mostpop --kv-policy snapkv:budget=0.5
echo "check_kvpolicy ok"
