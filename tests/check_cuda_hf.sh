#!/usr/bin/env bash
# check_cuda_hf.sh (GPU + HF transformers): a checkpoint written by `earnest
# init` loads in Hugging Face transformers (LlamaForCausalLM tied and untied,
# Qwen2ForCausalLM with q/k/v biases, GQA) and its float32 logits equal
# `earnest forward --device cuda` (and --device cpu) within rel 1e-4 over a
# 40-token sequence. Skips (77) without a GPU or without transformers.
# EARNEST_PYTHON names the python with torch + transformers + h5py.
set -euo pipefail
B="${EARNEST_BIN:?}"
PY="${EARNEST_PYTHON:-/usr/bin/python3}"
if ! nvidia-smi -L >/dev/null 2>&1; then echo "GPU check skipped: no GPU (nvidia-smi -L failed)"; exit 77; fi
if ! "$PY" -c "import torch, transformers, h5py" 2>/dev/null; then
    echo "GPU check skipped: $PY has no torch/transformers/h5py"; exit 77
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
TOKENS=$(seq 3 7 282 | tr '\n' ' ')
"$B" init --preset tiny --vocab-size 300 --std 0.05 --out llama_tied > /dev/null
"$B" init --preset tiny --vocab-size 300 --std 0.05 --untie --seed 2 --out llama_untied > /dev/null
"$B" init --preset small --vocab-size 300 --std 0.05 --arch qwen2 --untie --seed 3 --out qwen2 > /dev/null
for m in llama_tied llama_untied qwen2; do
    "$B" forward --model $m --tokens "$TOKENS" --device cuda --out ${m}_cuda.h5 > /dev/null || fail "forward cuda $m"
    "$B" forward --model $m --tokens "$TOKENS" --out ${m}_cpu.h5 > /dev/null || fail "forward cpu $m"
done
"$PY" - <<'PYEOF' || fail "HF comparison"
import h5py, numpy as np, torch, transformers, json
torch.backends.cuda.matmul.allow_tf32 = False
for m in ("llama_tied", "llama_untied", "qwen2"):
    arch = json.load(open(m + "/config.json"))["architectures"][0]
    cls = getattr(transformers, arch)
    model = cls.from_pretrained(m, dtype=torch.float32).eval()
    toks = h5py.File(m + "_cuda.h5")["tokens"][:]
    with torch.no_grad():
        ref = model(torch.tensor(toks[None, :], dtype=torch.long)).logits[0].double().numpy()
    for dev in ("cuda", "cpu"):
        got = h5py.File(f"{m}_{dev}.h5")["logits"][:].astype(np.float64)
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        print(f"{m:13s} {arch:17s} earnest {dev:4s} vs transformers {transformers.__version__}: rel {rel:.2e}")
        assert rel <= 1e-4, rel
PYEOF
echo "check_cuda_hf: OK"
