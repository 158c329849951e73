#!/usr/bin/env python3
"""HF transformers' constrained beam search on a Llama-2-7B-shape checkpoint,
timed the way `earnest bench` times its own (the GPU benchmarks issue).

Writes a random bf16 checkpoint of the Llama-2-7B shape (LlamaForCausalLM,
untied, vocab 32000) with save_pretrained, so that `earnest bench --model DIR`
reads the same safetensors files, then times `generate(num_beams=20,
num_return_sequences=20, max_new_tokens=4, prefix_allowed_tokens_fn=trie)`:
prompts of random ids below the code tokens, codes of 4 tokens from 4 blocks
of 256 ids at the top of the vocabulary (4,096 random codes: the shape of
earnest bench's synthetic trie, not the same codes). Per (prompt length,
batch): one untimed warm-up, then the median wall time of REPS calls
(torch.cuda.synchronize() around each), in CSV:
  engine,prompt_len,batch,beam,ms_per_call,ms_per_user,new_tokens_per_s,device_name

usage: hf_beam_bench.py write CKPT_DIR
       hf_beam_bench.py time CKPT_DIR OUT.csv "150:1,16 1024:1,4" [REPS]
"""
import csv
import random
import statistics
import sys
import time

import torch
import transformers

V, LEVELS, PER_LEVEL, BEAMS, N_CODES = 32000, 4, 256, 20, 4096
BASE = V - PER_LEVEL * LEVELS


def write(ckpt):
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    t0 = time.time()
    model.save_pretrained(ckpt, safe_serialization=True)
    print(f"wrote {ckpt} in {time.time() - t0:.1f} s")


def make_trie(seed=7):
    rng = random.Random(seed)
    trie = {}
    for _ in range(N_CODES):
        node = trie
        for j in range(LEVELS):
            node = node.setdefault(BASE + j * PER_LEVEL + rng.randrange(PER_LEVEL), {})
    return trie


def time_it(ckpt, out, plan, reps):
    model = transformers.LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16, device_map="cuda").eval()
    trie = make_trie()

    def allowed(batch_id, ids, plen):
        node = trie
        for t in ids[plen:].tolist():
            node = node.get(t, {})
        return list(node.keys()) or [0]

    name = torch.cuda.get_device_name(0)
    rows = []
    g = torch.Generator().manual_seed(1)
    for item in plan.split():
        L, batches = item.split(":")
        for B in (int(b) for b in batches.split(",")):
            L = int(L)
            ids = torch.randint(0, BASE, (B, L), generator=g).cuda()
            kw = dict(num_beams=BEAMS, num_return_sequences=BEAMS, max_new_tokens=LEVELS, min_new_tokens=LEVELS,
                      do_sample=False, early_stopping=True, pad_token_id=0, eos_token_id=None,
                      prefix_allowed_tokens_fn=lambda b, x: allowed(b, x, L))
            with torch.no_grad():
                model.generate(ids, **kw)  # warm-up
                ts = []
                for _ in range(reps):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    model.generate(ids, **kw)
                    torch.cuda.synchronize()
                    ts.append(time.perf_counter() - t0)
            ms = 1e3 * statistics.median(ts)
            rows.append(["hf", L, B, BEAMS, f"{ms:.3f}", f"{ms / B:.3f}", f"{B * BEAMS * LEVELS / (ms * 1e-3):.1f}", name])
            print(*rows[-1], flush=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["engine", "prompt_len", "batch", "beam", "ms_per_call", "ms_per_user", "new_tokens_per_s",
                    "device_name"])
        w.writerows(rows)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        time_it(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 3)
