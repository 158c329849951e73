#!/usr/bin/python3
"""Independent reference for `earnest forward`, in numpy (float64).

Writes Hugging Face checkpoints itself (config.json + model.safetensors in
f32, bf16 or f16; Llama or Qwen2; GQA; tied or untied), runs the earnest
binary on them, and compares /logits (and /attn) with a plain numpy Llama
forward written from the HF modelling code's definitions. Nothing here shares
code with the C runtime.

usage: hf_reference.py EARNEST_BIN WORKDIR
"""
import json
import os
import struct
import subprocess
import sys

import h5py
import numpy as np

TOL = 1e-4


def to_bf16_bytes(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    # round to nearest even, as torch does
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u.tobytes(), u.astype(np.uint32) << 16


def write_safetensors(path, tensors, dtype):
    header, blobs, off = {}, [], 0
    stored = {}
    for name, a in tensors.items():
        if dtype == "F32":
            b = np.ascontiguousarray(a, dtype=np.float32).tobytes()
            stored[name] = np.asarray(a, dtype=np.float32)
        elif dtype == "F16":
            h = np.ascontiguousarray(a, dtype=np.float16)
            b = h.tobytes()
            stored[name] = h.astype(np.float32)
        else:
            b, bits = to_bf16_bytes(a)
            stored[name] = bits.view(np.float32).reshape(a.shape)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return stored  # the values as the file holds them, widened to f32


def make_model(rng, arch, D, F, L, H, G, V, tie):
    E = D // H
    t = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, D))}
    for i in range(L):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=D)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=D)
        t[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.3, (H * E, D))
        t[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.3, (G * E, D))
        t[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.3, (G * E, D))
        t[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.3, (D, H * E))
        if arch == "qwen2":
            t[p + "self_attn.q_proj.bias"] = rng.normal(0, 0.3, H * E)
            t[p + "self_attn.k_proj.bias"] = rng.normal(0, 0.3, G * E)
            t[p + "self_attn.v_proj.bias"] = rng.normal(0, 0.3, G * E)
        t[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.3, (F, D))
        t[p + "mlp.up_proj.weight"] = rng.normal(0, 0.3, (F, D))
        t[p + "mlp.down_proj.weight"] = rng.normal(0, 0.3, (D, F))
    t["model.norm.weight"] = 1 + 0.1 * rng.normal(size=D)
    if not tie:
        t["lm_head.weight"] = rng.normal(0, 0.5, (V, D))
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": arch, "hidden_size": D, "intermediate_size": F, "num_hidden_layers": L,
        "num_attention_heads": H, "num_key_value_heads": G, "vocab_size": V, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0 if arch == "llama" else 1000000.0, "tie_word_embeddings": tie,
        "max_position_embeddings": 512, "hidden_act": "silu",
    }
    return cfg, t


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, theta):  # x [T, n, E], HF rotate_half
    E = x.shape[-1]
    inv = theta ** (-np.arange(0, E, 2, dtype=np.float64) / E)
    ang = np.outer(pos, inv)  # [T, E/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., E // 2:], x[..., :E // 2]], -1)
    return x * cos + rot * sin


def forward(cfg, w, tokens):
    D, L, H, G = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    E, eps, theta, T = D // H, cfg["rms_norm_eps"], cfg["rope_theta"], len(tokens)
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = w["model.embed_tokens.weight"][tokens]
    pos = np.arange(T, dtype=np.float64)
    attn_all = np.zeros((L, H, T, T))
    causal = np.tril(np.ones((T, T), dtype=bool))
    for i in range(L):
        p = f"model.layers.{i}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = h @ w[p + "self_attn.q_proj.weight"].T + w.get(p + "self_attn.q_proj.bias", 0)
        k = h @ w[p + "self_attn.k_proj.weight"].T + w.get(p + "self_attn.k_proj.bias", 0)
        v = h @ w[p + "self_attn.v_proj.weight"].T + w.get(p + "self_attn.v_proj.bias", 0)
        q = rope(q.reshape(T, H, E), pos, theta)
        k = rope(k.reshape(T, G, E), pos, theta)
        v = v.reshape(T, G, E)
        out = np.zeros((T, H, E))
        for hh in range(H):
            g = hh // (H // G)
            s = q[:, hh] @ k[:, g].T / np.sqrt(E)
            s = np.where(causal, s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            attn_all[i, hh] = s
            out[:, hh] = s @ v[:, g]
        x = x + out.reshape(T, H * E) @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    h = rmsnorm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return h @ head.T, attn_all


CASES = [
    # name, arch, D, F, L, H, G, V, tie, dtype, T
    ("llama_gqa_f32_untied", "llama", 64, 96, 3, 8, 2, 101, False, "F32", 37),
    ("qwen2_bias_tied_f32", "qwen2", 48, 80, 2, 4, 4, 67, True, "F32", 21),
    ("llama_bf16_tied", "llama", 32, 64, 2, 4, 2, 50, True, "BF16", 19),
    ("qwen2_f16_gqa_untied", "qwen2", 40, 72, 2, 4, 1, 45, False, "F16", 16),
    ("odd_sizes", "llama", 30, 47, 3, 5, 5, 53, False, "F32", 13),
]


def main():
    earnest, work = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    failed = 0
    for name, arch, D, F, L, H, G, V, tie, dtype, T in CASES:
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        cfg, t = make_model(rng, arch, D, F, L, H, G, V, tie)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        stored = write_safetensors(os.path.join(d, "model.safetensors"), t, dtype)
        tokens = rng.integers(0, V, T)
        out = os.path.join(d, "f.h5")
        subprocess.run([earnest, "forward", "--model", d, "--tokens", " ".join(map(str, tokens)), "--out", out,
                        "--attn"], check=True)
        ref, ref_attn = forward(cfg, stored, tokens)
        with h5py.File(out, "r") as f:
            got, attn = f["logits"][:], f["attn"][:]
        err = np.abs(got - ref).max() / np.abs(ref).max()
        aerr = np.abs(attn - ref_attn).max()
        ok = err < TOL and aerr < 1e-5 and got.shape == (T, V) and attn.shape == (L, H, T, T)
        failed += not ok
        print(f"{'ok ' if ok else 'BAD'} {name}: logits rel err {err:.2e}, attn max abs err {aerr:.2e}")
    print(f"{len(CASES) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
