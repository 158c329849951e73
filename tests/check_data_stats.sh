#!/usr/bin/env bash
# The prepared AtSpeed datasets reproduce the published statistics exactly
# (../shared/datasets/README.md, DESIGN.md "Data"): users, items, per-split
# interactions, test users with targets, mean targets, colliding codes.
set -euo pipefail
MIRROR=${EARNEST_DATA_MIRROR:-$EARNEST_SHARED/datasets}
if [ ! -d "$MIRROR/atspeed/games" ]; then
  echo "no dataset mirror at $MIRROR (set EARNEST_DATA_MIRROR)"; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for name in games beauty; do
  "$EARNEST_BIN" prepare atspeed --src "$MIRROR/atspeed/$name" --name "$name" --out "$work/$name" >/dev/null
  "$EARNEST_BIN" data stats "$work/$name" --json > "$work/$name.json"
done
/usr/bin/python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
expect = {
    "games": dict(n_users=49156, n_items=17332, interactions_train=299987, interactions_valid=22609,
                  interactions_test=19733, test_users_with_targets=8696, colliding_codes=41, colliding_items=84),
    "beauty": dict(n_users=19383, n_items=12035, interactions_train=122241, interactions_valid=9316,
                   interactions_test=7313, test_users_with_targets=3553),
}
bad = 0
for name, want in expect.items():
    got = json.load(open(f"{w}/{name}.json"))
    for k, v in want.items():
        if got[k] != v:
            print(f"{name}: {k} = {got[k]}, expected {v}"); bad += 1
    print(f"{name}: " + ", ".join(f"{k}={got[k]}" for k in want))
g = json.load(open(f"{w}/games.json"))
if abs(g["mean_test_targets"] - 2.27) > 0.005:
    print(f"games: mean_test_targets {g['mean_test_targets']}, expected 2.27"); bad += 1
print("1 passed, 0 failed" if not bad else "0 passed, 1 failed")
sys.exit(1 if bad else 0)
PY
