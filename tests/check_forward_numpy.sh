#!/usr/bin/env bash
# earnest forward vs an independent numpy Llama/Qwen2 forward on checkpoints
# that numpy writes itself (f32/bf16/f16, GQA, biases, tied/untied, odd sizes).
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$EARNEST_SOURCE_DIR/tests/reference/hf_reference.py" "$EARNEST_BIN" "$work"
