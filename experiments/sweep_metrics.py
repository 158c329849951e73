#!/usr/bin/python3
"""sweep_metrics.py: a sweep point's metrics from earnest's outputs (experiments/sweep_work.sh).

    sweep_metrics.py buckets --data DIR --split test|valid --rankings R.tsv --eval E.json
                             --buckets "1-3 4-5 6-9 10-19 20-" --out B.json
        Recall@K / NDCG@K (K = 10, 20) by history-length bucket, from the rankings
        TSV and the prepared dataset. History length = the items in the prompt:
        test: train + valid items, valid: train items, the last 20 kept (DESIGN.md
        "Data"). Metrics as analysis/recmetrics.h (distinct target items, codes
        compared as strings). The overall figures must equal the eval JSON's,
        which checks that the two computations agree.
    sweep_metrics.py point --model DIR --eval E.json --buckets B.json --bench B.csv
                           [--attn A.csv] --method M [--own NAME] [--keep-layers M] --k K --n-layers N
                           --out metrics.json
        One flat JSON object: training summary (train_*), evaluation (recall@K,
        ndcg@K, mostpop_*, eval_* efficiency: prefill/decode ms, tau, sigma, gamma,
        omega, and a policy's name and kept history items), buckets
        (hist<lo>-<hi>_*), bench (bench_*: the point's own row, the bench CSV's
        method column NAME (default: earn for EARN, else full), against the full
        row on the same weights, with the closed forms closed_speedup = N/k and
        closed_kv_reduction = (N-k)/N for EARN, N/M and (N-M)/N for skiplayers,
        1 and 0 for finetune, null for the others),
        attention (attn_*, decision row, head means: the mean over the layers that
        see the prompt; for EARN the layers >= k see only registers, so their
        figures are degenerate by construction and left out, as null).
    sweep_metrics.py bench --bench B.csv --method M [--own NAME] [--keep-layers M] --k K --n-layers N
                           --out metrics.json
        A bench-only point (dataset=none, experiments/sweep_bench.sh): the bench_*
        and closed_* figures above, plus the device, dtype and the prefill's share
        of the matrix-product ceiling measured in the same run.
    sweep_metrics.py unsupported --note TEXT --out metrics.json
"""
import csv
import json
import math
import os
import sys

MAX_HISTORY = 20
KS = (10, 20)


def die(msg):
    sys.stderr.write("sweep_metrics: %s\n" % msg)
    sys.exit(1)


def write_json(path, obj):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_split(path):
    seqs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.split()
            if p:
                seqs[int(p[0])] = [int(x) for x in p[1:]]
    return seqs


def read_codes(path):
    codes = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            item, code = line.rstrip("\n").split("\t")
            codes[int(item)] = code
    return codes


def read_rankings(path):
    ranked = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            user, rank, code, _ = line.rstrip("\n").split("\t")
            ranked.setdefault(int(user), []).append((int(rank), code))
    return {u: [c for _, c in sorted(v)] for u, v in ranked.items()}


def user_metrics(ranked, targets, K):
    top = ranked[:K]
    hits = sum(1 for g in targets if g in top)
    dcg = sum(1.0 / math.log2(j + 2) for j, c in enumerate(top) if c in targets)
    idcg = sum(1.0 / math.log2(j + 2) for j in range(min(len(targets), K)))
    return hits / len(targets), dcg / idcg


def parse_buckets(text):
    out = []
    for b in text.split():
        lo, _, hi = b.partition("-")
        out.append((b, int(lo), int(hi) if hi else 1 << 30))
    return out


def samples(data, split):
    """user -> (history length, distinct target items) as datasets/samples.h builds them."""
    train, valid = read_split(os.path.join(data, "train.txt")), read_split(os.path.join(data, "valid.txt"))
    out = {}
    if split == "test":
        test = read_split(os.path.join(data, "test.txt"))
        for u, t in test.items():
            if t:
                out[u] = (min(MAX_HISTORY, len(train.get(u, [])) + len(valid.get(u, []))), list(dict.fromkeys(t)))
    else:
        for u, v in valid.items():
            if v:
                out[u] = (min(MAX_HISTORY, len(train.get(u, []))), [v[0]])
    return out


def cmd_buckets(a):
    codes = read_codes(os.path.join(a["--data"], "codes.tsv"))
    smp = samples(a["--data"], a["--split"])
    ranked = read_rankings(a["--rankings"])
    buckets = parse_buckets(a["--buckets"])
    sums = {name: [0, 0.0, 0.0, 0.0, 0.0] for name, _, _ in buckets}
    total = [0, 0.0]
    for u, r in ranked.items():
        if u not in smp:
            die("%s: user %d has no %s sample in %s" % (a["--rankings"], u, a["--split"], a["--data"]))
        n_hist, items = smp[u]
        targets = [codes[i] for i in items]
        (r10, n10), (r20, n20) = user_metrics(r, targets, 10), user_metrics(r, targets, 20)
        total[0] += 1
        total[1] += r10
        for name, lo, hi in buckets:
            if lo <= n_hist <= hi:
                s = sums[name]
                s[0] += 1
                s[1] += r10; s[2] += n10; s[3] += r20; s[4] += n20
    ev = json.load(open(a["--eval"], encoding="utf-8"))
    overall = total[1] / total[0] if total[0] else 0.0
    if total[0] != ev["n_users"] or abs(overall - ev["recall@10"]) > 1e-6:
        die("%s: %d users, recall@10 %.8f from the rankings, but %s says %d users, %.8f: the bucket computation "
            "does not match earnest eval" % (a["--rankings"], total[0], overall, a["--eval"], ev["n_users"],
                                             ev["recall@10"]))
    out = {}
    for name, _, _ in buckets:
        n, r10, n10, r20, n20 = sums[name]
        tag = "hist" + name.rstrip("-") + ("+" if name.endswith("-") else "")
        out[tag + "_users"] = n
        for key, v in (("recall@10", r10), ("ndcg@10", n10), ("recall@20", r20), ("ndcg@20", n20)):
            out["%s_%s" % (tag, key)] = v / n if n else None
    write_json(a["--out"], out)


def train_metrics(model_dir):
    path = os.path.join(model_dir, "summary.json")
    if not os.path.exists(path):
        return {"train_stopped": "unknown"}  # a run that ended without its summary (resumed after the end)
    s = json.load(open(path, encoding="utf-8"))
    m = {"train_stopped": s["stopped"], "train_steps": s["steps"], "train_total_steps": s["total_steps"],
         "train_seconds": s["train_seconds"], "train_best_epoch": s["best_epoch"],
         "train_best_valid_recall@10": s["best_valid_recall@10"], "n_params": s["n_params"],
         "train_tokens_per_s": s["tokens_per_s_wall"]}
    m["train_fraction"] = s["steps"] / s["total_steps"] if s["total_steps"] else None
    return m


def eval_metrics(path):
    ev = json.load(open(path, encoding="utf-8"))
    m = {k: v for k, v in ev.items() if k.startswith(("recall@", "ndcg@"))}
    m["n_users"] = ev["n_users"]
    for k, v in ev.get("mostpop", {}).items():
        m["mostpop_" + k] = v
    for k in ("prefill_ms", "decode_ms", "total_ms", "tau", "gamma", "sigma", "sigma_full", "omega", "prompt_tokens",
              "prompt_policy_ms"):
        if k in ev.get("efficiency", {}):
            m["eval_" + k] = ev["efficiency"][k]
    for kind in ("kv_policy", "prompt_policy"):  # a policy point's: which policy ran, and what it kept
        pol = ev.get(kind) or {}
        if pol.get("name", "none") != "none":
            m["eval_%s" % kind] = pol.get("spec", pol["name"])
            for k in ("history_items", "history_items_kept"):
                if k in pol:
                    m["eval_" + k] = pol[k]
    return m


def own_name(a):
    """The bench CSV's method column of the point's own row."""
    return a.get("--own") or ("earn" if a["--method"] == "earn" else "full")


def closed_forms(method, k, keep, n, own_method):
    """(speedup, KV reduction) in closed form where the method has one (EARN, skiplayers, finetune without a
    policy)."""
    if own_method not in ("full", "earn", "skiplayers"):
        return None, None
    if method == "earn":
        return n / k, (n - k) / n
    if method == "skiplayers" and keep:
        return n / keep, (n - keep) / n
    if method == "finetune":
        return 1.0, 0.0
    return None, None


def bench_metrics(path, method, k, n, own_method="", keep=0):
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    full = next(r for r in rows if r["method"] == "full")
    own_method = own_method or ("earn" if method == "earn" else "full")
    own = next((r for r in rows if r["method"] == own_method), None)
    if own is None:
        raise KeyError("%s: no row with method %s (rows: %s)" % (path, own_method, ", ".join(r["method"] for r in rows)))
    m = {"bench_prompt_len": int(own["prompt_len"]), "bench_threads": int(own["threads"])}
    for key in ("prefill_ms", "decode_ms", "total_ms"):
        m["bench_" + key] = float(own[key])
        m["bench_full_" + key] = float(full[key])
    m["bench_kv_bytes"] = int(own["kv_bytes"])
    m["bench_full_kv_bytes"] = int(full["kv_bytes"])
    m["bench_speedup"] = float(own["speedup"])
    m["bench_prefill_speedup"] = float(full["prefill_ms"]) / float(own["prefill_ms"])
    m["bench_kv_reduction"] = float(own["kv_reduction"])
    for key in ("tau", "sigma"):  # the policy-era columns (absent from older benches)
        if own.get(key) not in (None, ""):
            m["bench_" + key] = float(own[key])
    m["closed_speedup"], m["closed_kv_reduction"] = closed_forms(method, k, keep, n, own_method)
    return m


def attn_metrics(path, method, k, n):
    """Decision-row head means over the layers that see the prompt (EARN: l < k), per half of the model."""
    vals = {}
    for r in csv.DictReader(open(path, encoding="utf-8")):
        if r["head"] == "-1" and r["rows"] == "decision" and int(r["layer"]) >= 0:
            vals[(int(r["layer"]), r["metric"])] = float(r["value"])
    seen = [l for l in range(n) if method != "earn" or l < k]
    m = {}
    for metric in ("density_eps", "sink_head", "sink_tail", "entropy_norm"):
        for half, layers in (("early", [l for l in seen if l < n // 2]), ("late", [l for l in seen if l >= n // 2]),
                             ("prompt", seen)):
            v = [vals[(l, metric)] for l in layers if (l, metric) in vals and not math.isnan(vals[(l, metric)])]
            m["attn_%s_%s" % (metric, half)] = sum(v) / len(v) if v else None
    return m


def cmd_point(a):
    k, n = int(a["--k"]), int(a["--n-layers"])
    m = {"status": "done", "n_layers": n}
    m.update(train_metrics(a["--model"]))
    m.update(eval_metrics(a["--eval"]))
    m.update(json.load(open(a["--buckets"], encoding="utf-8")))
    m.update(bench_metrics(a["--bench"], a["--method"], k, n, own_name(a), int(a.get("--keep-layers") or 0)))
    if a.get("--attn"):
        m.update(attn_metrics(a["--attn"], a["--method"], k, n))
        if a["--method"] == "earn":
            m["note"] = "attention of layers >= k left out (they see only registers)"
    write_json(a["--out"], m)


def cmd_bench(a):
    k, n = int(a["--k"]), int(a["--n-layers"])
    m = {"status": "done", "n_layers": n}
    m.update(bench_metrics(a["--bench"], a["--method"], k, n, own_name(a), int(a.get("--keep-layers") or 0)))
    rows = list(csv.DictReader(open(a["--bench"], encoding="utf-8")))
    own = next(r for r in rows if r["method"] == own_name(a))
    m["bench_device"] = own["device"]
    m["bench_dtype"] = own.get("dtype", "f32")
    m["bench_prefill_vs_gemm"] = float(own["prefill_vs_sgemm"])
    m["bench_gemm_gflops"] = float(own["sgemm_gflops"])
    write_json(a["--out"], m)


def cmd_unsupported(a):
    write_json(a["--out"], {"status": "unsupported", "note": a["--note"]})


def main():
    cmds = {"buckets": cmd_buckets, "point": cmd_point, "bench": cmd_bench, "unsupported": cmd_unsupported}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        die("usage: sweep_metrics.py buckets|point|bench|unsupported ... (see the header)")
    a, argv = {}, sys.argv[2:]
    if len(argv) % 2:
        die("options come in pairs: --name value")
    for i in range(0, len(argv), 2):
        if not argv[i].startswith("--"):
            die("unexpected argument %r" % argv[i])
        a[argv[i]] = argv[i + 1]
    try:
        cmds[sys.argv[1]](a)
    except (OSError, KeyError, ValueError, StopIteration) as ex:
        die("%s: %s: %s" % (sys.argv[1], type(ex).__name__, ex))


if __name__ == "__main__":
    main()
