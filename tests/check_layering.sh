#!/usr/bin/env bash
# check_layering: the engine stays an engine (DESIGN.md "Layout").
#  1. nothing under runtime/ includes a header of datasets/, analysis/ or
#     experiments/ (the runtime is usable, and testable, without them);
#  2. no function under runtime/ is longer than 120 lines (the llm.c rule of
#     thumb the project keeps: a reader sees one step at a time).
# Each rule is checked on the tree, then on a planted violation, so the check
# itself is shown to fail when it should.
set -euo pipefail
SRC=${EARNEST_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
MAX_LINES=120

bad_includes() { # DIR: prints every offending include
    grep -rnE '#include "(datasets|analysis|experiments)/' "$1" || true
}

long_functions() { # DIR: prints FILE:LINE name (N lines) for each function over MAX_LINES
    /usr/bin/python3 - "$1" "$MAX_LINES" <<'EOF'
import os, re, sys
root, limit = sys.argv[1], int(sys.argv[2])
# A function definition starts at column 0 with a declarator that has "(" and
# ends its line with "{"; it ends at the first "}" in column 0.
start = re.compile(r'^[A-Za-z_][^;=]*\([^;]*\)\s*\{\s*$')
for dirpath, _, files in os.walk(root):
    for name in sorted(files):
        if not name.endswith(('.c', '.h', '.cu')):
            continue
        path = os.path.join(dirpath, name)
        lines = open(path, encoding='utf-8', errors='replace').read().split('\n')
        i = 0
        while i < len(lines):
            if start.match(lines[i]) and not lines[i].startswith(('typedef', 'struct', 'enum', 'union')):
                j = i + 1
                while j < len(lines) and lines[j] != '}':
                    j += 1
                n = j - i + 1
                if n > limit:
                    fn = re.search(r'([A-Za-z_]\w*)\s*\(', lines[i]).group(1)
                    print(f"{path}:{i + 1}: {fn} ({n} lines)")
                i = j
            i += 1
EOF
}

fail=0
out=$(bad_includes "$SRC/runtime")
if [ -n "$out" ]; then
    echo "FAIL: runtime/ includes from datasets/, analysis/ or experiments/:"; echo "$out"; fail=1
fi
out=$(long_functions "$SRC/runtime")
if [ -n "$out" ]; then
    echo "FAIL: functions in runtime/ over $MAX_LINES lines:"; echo "$out"; fail=1
fi

# The checks catch planted violations.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/runtime"
printf '#include "datasets/dataset.h"\nint f(void) {\n' > "$WORK/runtime/bad.c"
for _ in $(seq 1 $MAX_LINES); do echo '    ;' >> "$WORK/runtime/bad.c"; done
echo '}' >> "$WORK/runtime/bad.c"
[ -n "$(bad_includes "$WORK/runtime")" ] || { echo "FAIL: a planted datasets/ include was not found"; fail=1; }
[ -n "$(long_functions "$WORK/runtime")" ] || { echo "FAIL: a planted $((MAX_LINES + 2))-line function was not found"; fail=1; }

[ $fail = 0 ] && echo "check_layering: runtime/ includes only runtime/ headers; no function over $MAX_LINES lines"
exit $fail
