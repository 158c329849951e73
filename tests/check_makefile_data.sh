#!/bin/bash
# check_makefile_data.sh: `make -f Makefile.data games` from the local mirror
# prepares the Games dataset in seconds with the published counts; a corrupted
# mirror copy fails on its SHA-256 sum and prepares nothing; the synthetic
# target works.
# Env (set by CTest): EARNEST_BIN, EARNEST_SOURCE_DIR, EARNEST_SHARED.
set -euo pipefail
: "${EARNEST_BIN:?}" "${EARNEST_SOURCE_DIR:?}" "${EARNEST_SHARED:?}"
MIRROR="$EARNEST_SHARED/datasets"
if [ ! -d "$MIRROR/atspeed/games" ]; then
    echo "SKIP: no dataset mirror at $MIRROR"
    exit 0
fi
TMP=$(mktemp -d)
trap 'chmod -R u+w "$TMP"; rm -rf "$TMP"' EXIT
cd "$TMP"
fail() { echo "FAIL: $*" >&2; exit 1; }
meta_field() { # meta_field DIR FIELD
    /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1] + "/meta.json"))[sys.argv[2]])' "$1" "$2"
}

# 1. games from the mirror: succeeds in seconds, with the published counts.
start=$(date +%s%N)
EARNEST_DATA_MIRROR="$MIRROR" make -s -f "$EARNEST_SOURCE_DIR/Makefile.data" games DATA=data EARNEST="$EARNEST_BIN" \
    > make.log 2>&1 || { cat make.log; fail "make games failed"; }
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "make games: ${ms} ms"
[ "$ms" -lt 20000 ] || fail "make games took ${ms} ms"
for f in meta.json train.txt valid.txt test.txt codes.tsv; do
    [ -s "data/games/$f" ] || fail "data/games/$f missing"
done
[ "$(meta_field data/games n_users)" = 49156 ] || fail "n_users $(meta_field data/games n_users) != 49156"
[ "$(meta_field data/games n_items)" = 17332 ] || fail "n_items $(meta_field data/games n_items) != 17332"
[ "$(meta_field data/games code_levels)" = 4 ] || fail "code_levels != 4"
[ "$(wc -l < data/games/train.txt)" = 49156 ] || fail "train.txt line count"
[ "$(wc -l < data/games/codes.tsv)" = 17332 ] || fail "codes.tsv line count"
# The splits are the release files, byte for byte.
for s in train valid test; do
    cmp -s "data/games/$s.txt" "$MIRROR/atspeed/games/sequential_$s.txt" || fail "$s.txt differs from the release"
done
# Interaction counts as published: 299,987 / 22,609 / 19,733.
/usr/bin/python3 - data/games <<'EOF' || fail "interaction counts"
import sys
d = sys.argv[1]
n = [sum(len(l.split()) - 1 for l in open(f"{d}/{s}.txt")) for s in ("train", "valid", "test")]
assert n == [299987, 22609, 19733], n
EOF

# 2. a corrupted mirror copy: checksum mismatch, clear message, nothing prepared.
mkdir -p bad/atspeed
cp -r "$MIRROR/atspeed/games" bad/atspeed/
chmod -R u+w bad
printf '1 2\n' >> bad/atspeed/games/sequential_valid.txt
if EARNEST_DATA_MIRROR="$TMP/bad" make -s -f "$EARNEST_SOURCE_DIR/Makefile.data" games DATA=data2 EARNEST="$EARNEST_BIN" \
    > bad.log 2>&1; then
    cat bad.log; fail "make games accepted a corrupted mirror"
fi
grep -q "SHA-256 mismatch for games" bad.log || { cat bad.log; fail "no checksum message"; }
grep -q "sequential_valid.txt: FAILED" bad.log || { cat bad.log; fail "the bad file is not named"; }
[ ! -e data2/games ] || fail "data2/games exists after a checksum failure"
[ ! -e data2/.src/atspeed/games ] || fail "the bad copy was kept"

# 3. no earnest binary: a clear message.
if make -s -f "$EARNEST_SOURCE_DIR/Makefile.data" games DATA=data3 EARNEST="$TMP/nope" > nobin.log 2>&1; then
    fail "make games ran without a binary"
fi
grep -q "no earnest binary" nobin.log || { cat nobin.log; fail "no message for a missing binary"; }

# 4. synthetic: a small prepared dataset.
make -s -f "$EARNEST_SOURCE_DIR/Makefile.data" synthetic DATA=data EARNEST="$EARNEST_BIN" > syn.log 2>&1 \
    || { cat syn.log; fail "make synthetic failed"; }
[ "$(meta_field data/synthetic n_users)" -gt 1000 ] || fail "synthetic n_users"
[ -s data/synthetic/codes.tsv ] || fail "synthetic codes.tsv missing"
echo "OK"
