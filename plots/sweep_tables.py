#!/usr/bin/python3
"""sweep_tables.py: the data tables behind plots/sweep.sh's figures.

    sweep_tables.py WORKDIR CSV...

Inputs, recognised by their header: sweep CSVs (experiments/sweep.sh, header
"id,sweep,model_id,...") and `earnest bench` CSVs (header "method,k,prefix_regs,...").
For every figure it writes comma-separated tables and a file of gnuplot
assignments (data paths, titles, reference values) into WORKDIR, and prints
    SCRIPT<TAB>OUTNAME<TAB>VARS.gp
(sweep.sh runs `gnuplot -c plots/SCRIPT WORKDIR/OUTNAME WORKDIR/VARS.gp`).

A sweep CSV is split into groups of equal dataset, preset, template, seed and
device; figures get the suffix _<dataset>_<preset>... only when there are several
groups. Within a group the bench figures use the longest prompt length. Points
whose status is not "done" (EARN without a suffix register: "unsupported") are
shown as such, never as a value; attention figures use only the layers that see
the prompt (EARN's layers >= k see only registers: degenerate, left out).
"""
import csv
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"))
from sweep_table import label as method_label  # noqa: E402  (the baselines table's row names)

GROUP_KEYS = ("dataset", "preset", "template", "seed", "device")
NAN = float("nan")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def fmt(v):
    if isinstance(v, str):
        return v
    return "NaN" if v is None or math.isnan(v) else "%.6g" % v


def gp_str(s):
    return '"%s"' % str(s).replace("\\", "\\\\").replace('"', '\\"')


class Figures:
    def __init__(self, work):
        self.work, self.jobs = work, []

    def table(self, name, header, rows):
        path = os.path.join(self.work, name + ".csv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("# " + ",".join(header) + "\n")
            for r in rows:
                f.write(",".join(fmt(x) for x in r) + "\n")
        return path

    def add(self, script, out, **assign):
        path = os.path.join(self.work, out + ".vars.gp")
        with open(path, "w", encoding="utf-8") as f:
            for k, v in assign.items():
                f.write("%s = %s\n" % (k, gp_str(v) if isinstance(v, str) else fmt(v)))
        self.jobs.append((script, out, path))


def read_csv(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def done(r):
    return r.get("status") == "done"


def finetune(rows):
    return next((r for r in rows if r["method"] == "finetune" and done(r)), None)


def longest(rows):
    """The rows of the longest prompt length (the bench figures use it)."""
    L = max(int(r["prompt_len"]) for r in rows)
    return [r for r in rows if int(r["prompt_len"]) == L], L


def figs_k(F, sfx, rows, n, title):
    """Accuracy, speedup, KV reduction and attention by k: EARN with 1+1 registers; finetune beside."""
    rows, L = longest(rows)
    er = sorted((r for r in rows if r["method"] == "earn" and r["prefix_regs"] == "1" and r["suffix_regs"] == "1"
                 and done(r)), key=lambda r: int(r["k"]))
    if not er:
        return
    ft = finetune(rows)
    table = [[int(r["k"]), num(r.get("recall@10")), num(r.get("ndcg@10")), num(r.get("bench_speedup")),
              num(r.get("bench_prefill_speedup")), 100 * num(r.get("bench_kv_reduction")), num(r.get("eval_gamma")),
              num(r.get("attn_density_eps_prompt")), num(r.get("attn_sink_head_prompt")),
              num(r.get("attn_sink_tail_prompt"))] for r in er]
    dat = F.table("k" + sfx, ["k", "recall10", "ndcg10", "speedup", "prefill_speedup", "kv_red_pct", "gamma_pct",
                              "density", "sink_head", "sink_tail"], table)
    ref = {c: num(ft.get(c)) if ft else NAN for c in ("recall@10", "ndcg@10", "attn_density_eps_prompt",
                                                       "attn_sink_head_prompt", "attn_sink_tail_prompt")}
    common = dict(DAT=dat, N=n, KEARN=max(1, n // 4), TITLE=title)
    if any(not math.isnan(t[1]) for t in table):  # bench-only sweeps (dataset=none) have no accuracy
        F.add("sweep_acc_k.gp", "sweep_acc_vs_k" + sfx, FT_R=ref["recall@10"], FT_N=ref["ndcg@10"],
              MP_R=num(er[0].get("mostpop_recall@10")), MP_N=num(er[0].get("mostpop_ndcg@10")), **common)
    bench = "prompt %d tokens, batch %s, beam %s, %s thread(s)" % (L, er[0].get("bench_batch", "?"),
                                                                   er[0].get("bench_beam", "?"),
                                                                   er[0].get("bench_threads", "?"))
    F.add("sweep_speed_k.gp", "sweep_speedup_vs_k" + sfx, BENCH=bench, **common)
    F.add("sweep_kv_k.gp", "sweep_kv_vs_k" + sfx, BENCH=bench, **common)
    if any(not math.isnan(t[7]) for t in table):
        F.add("sweep_attn_k.gp", "sweep_attn_vs_k" + sfx, FT_D=ref["attn_density_eps_prompt"],
              FT_H=ref["attn_sink_head_prompt"], FT_T=ref["attn_sink_tail_prompt"], **common)


def fig_regs(F, sfx, rows, n, title):
    """Accuracy by register counts at the k that has the most register pairs; unsupported shown as such."""
    rows, _ = longest(rows)
    by_k = {}
    for r in rows:
        if r["method"] == "earn":
            by_k.setdefault(int(r["k"]), []).append(r)
    if not by_k:
        return
    k, rs = max(by_k.items(), key=lambda kv: (len(kv[1]), -kv[0]))
    if len(rs) < 2:
        return
    rs.sort(key=lambda r: (int(r["prefix_regs"]) + int(r["suffix_regs"]), int(r["suffix_regs"])))
    table = []
    for i, r in enumerate(rs):
        p, s = r["prefix_regs"], r["suffix_regs"]
        kind = " prefix only" if s == "0" else " suffix only" if p == "0" else ""
        table.append([i, "%s+%s%s" % (p, s, kind), num(r.get("recall@10")) if done(r) else NAN,
                      num(r.get("ndcg@10")) if done(r) else NAN, 0 if done(r) else 1])
    ft = finetune(rows)
    F.add("sweep_regs.gp", "sweep_acc_vs_regs" + sfx,
          DAT=F.table("regs" + sfx, ["x", "label", "recall10", "ndcg10", "unsupported"], table), N=n, K=k,
          TITLE=title, FT_R=num(ft["recall@10"]) if ft else NAN, FT_N=num(ft["ndcg@10"]) if ft else NAN)


def fig_hist(F, sfx, rows, n, title):
    """Recall@10 by history-length bucket: finetune and every EARN k (1+1 registers)."""
    rows, _ = longest(rows)
    cfg = [r for r in rows if done(r) and (r["method"] == "finetune" or (r["prefix_regs"] == "1" and r["suffix_regs"] == "1"))]
    cfg.sort(key=lambda r: (r["method"] != "finetune", int(r["k"])))
    buckets = sorted({c[:-len("_users")] for c in rows[0] if c.startswith("hist") and c.endswith("_users")},
                     key=lambda b: int(b[4:].split("-")[0].rstrip("+")))
    if not cfg or not buckets:
        return
    names = ["finetune" if r["method"] == "finetune" else "EARN k=%s" % r["k"] for r in cfg]
    table = [[i, "%s (%s users)" % (b[4:], cfg[0][b + "_users"])] + [num(r.get(b + "_recall@10")) for r in cfg]
             for i, b in enumerate(buckets)]
    assign = {"NAME%d" % (i + 1): nm for i, nm in enumerate(names)}
    F.add("sweep_hist.gp", "sweep_acc_by_hist" + sfx, DAT=F.table("hist" + sfx, ["x", "bucket"] + names, table),
          NCFG=len(cfg), TITLE=title, **assign)


# The kinds of point in the methods figure (sweep_methods.gp's line styles 1..5).
KIND_FINETUNE, KIND_EARN, KIND_LEARNED, KIND_KV, KIND_PROMPT = range(5)
PROMPT_POLICIES = ("truncate", "selective")


def point_kind(r):
    pol = r.get("policy") or "none"
    if pol != "none":
        return KIND_PROMPT if pol.split(":")[0] in PROMPT_POLICIES else KIND_KV
    return {"finetune": KIND_FINETUNE, "earn": KIND_EARN}.get(r["method"], KIND_LEARNED)


def fig_methods(F, sfx, rows, title):
    """Every method and policy of a baselines sweep (one with a point that is neither finetune nor EARN):
    Recall@10 against the KV reduction (eval, test users: 1 - sigma / sigma_finetune) and against omega
    (bench), side by side."""
    rows, L = longest(rows)
    rs = [r for r in rows if done(r)]
    ft = next((r for r in rs if r["method"] == "finetune" and (r.get("policy") or "none") == "none"), None)
    if not ft or not any(point_kind(r) not in (KIND_FINETUNE, KIND_EARN) for r in rs):
        return
    sig = num(ft.get("eval_sigma"))
    table = [[100 * (1 - num(r.get("eval_sigma")) / sig), num(r.get("bench_speedup")), num(r.get("recall@10")),
              num(r.get("ndcg@10")), point_kind(r), method_label(r).replace(" on Finetune", "").replace(",", ";")]
             for r in rs]
    bench = "omega: prefill + beam decode of one %d-token prompt over the full model's, same weights (batch %s, " \
            "beam %s, %s thread(s))" % (L, ft.get("bench_batch", "?"), ft.get("bench_beam", "?"),
                                         ft.get("bench_threads", "?"))
    F.add("sweep_methods.gp", "sweep_methods" + sfx, TITLE=title, BENCH=bench,
          DAT=F.table("methods" + sfx, ["kv_red_pct", "omega", "recall10", "ndcg10", "kind", "label"], table),
          FT_R=num(ft.get("recall@10")), MP_R=num(ft.get("mostpop_recall@10")))


def sweep_figures(F, path):
    rows = read_csv(path)
    if not rows:
        sys.stderr.write("sweep: %s: no points\n" % path)
        return
    gs = {}
    for r in rows:
        gs.setdefault(tuple(r[k] for k in GROUP_KEYS), []).append(r)
    for key, rs in sorted(gs.items()):
        sfx = "_" + "_".join(v for v in key[:4]) if len(gs) > 1 else ""
        n = next((int(num(r["n_layers"])) for r in rs if not math.isnan(num(r.get("n_layers")))), 0)
        if not n:
            continue
        title = "%s, %s preset (N = %d layers), %s template, seed %s" % (key[0], key[1], n, key[2], key[3])
        if len({r["k"] for r in rs if r["method"] == "earn"}) >= 2:  # a k sweep, not one EARN point among baselines
            figs_k(F, sfx, rs, n, title)
            fig_hist(F, sfx, rs, n, title)
        fig_regs(F, sfx, rs, n, title)
        fig_methods(F, sfx, rs, title)


def bench_curves(F, paths):
    """Speedup of EARN over full vs prompt length, one curve per bench CSV (its most common batch and beam)."""
    curves, runs = [], []
    for path in paths:
        rows = read_csv(path)
        if not rows or not {"n_layers", "speedup"} <= set(rows[0]):
            sys.stderr.write("sweep: %s: no n_layers column (re-run it with this earnest bench); skipped\n" % path)
            continue
        earn = [r for r in rows if r["method"] == "earn"]
        lens = sorted({int(r["prompt_len"]) for r in earn})
        if len(lens) < 2:
            continue
        bb = max({(r["batch"], r["beam"]) for r in earn}, key=lambda x: sum((r["batch"], r["beam"]) == x for r in earn))
        earn = sorted((r for r in earn if (r["batch"], r["beam"]) == bb), key=lambda r: int(r["prompt_len"]))
        n, k = int(earn[0]["n_layers"]), int(earn[0]["k"])
        full = {int(r["prompt_len"]): r for r in rows if r["method"] == "full" and (r["batch"], r["beam"]) == bb}
        table = [[int(r["prompt_len"]), num(r["speedup"]), num(full[int(r["prompt_len"])]["prefill_ms"]) /
                  num(r["prefill_ms"]), 100 * num(r["kv_reduction"]), n / k] for r in earn]
        name = os.path.basename(path)[:-4]
        i = len(curves) + 1
        curves.append(F.table("len%d" % i, ["L", "speedup", "prefill_speedup", "kv_red_pct", "closed"], table))
        label = name[len("bench_lengths_"):] if name.startswith("bench_lengths_") else name
        curves.append("%s (N=%d, k=%d)" % (label, n, k))
        runs.append("%s: batch %s, beam %s, %s threads, %s reps" % (label, bb[0], bb[1], earn[0]["threads"],
                                                                   earn[0].get("reps", "?")))
    if curves:
        assign = {"NC": len(curves) // 2, "SUB": "; ".join(runs)}
        for i in range(len(curves) // 2):
            assign["DAT%d" % (i + 1)], assign["T%d" % (i + 1)] = curves[2 * i], curves[2 * i + 1]
        F.add("sweep_len.gp", "sweep_speedup_vs_len", **assign)


def main():
    if len(sys.argv) < 3:
        sys.stderr.write("usage: sweep_tables.py WORKDIR CSV...\n")
        sys.exit(2)
    F, benches = Figures(sys.argv[1]), []
    for path in sys.argv[2:]:
        with open(path, encoding="utf-8") as f:
            head = f.readline().strip()
        if head.startswith("id,sweep,model_id,"):
            sweep_figures(F, path)
        elif head.startswith("method,k,prefix_regs,suffix_regs,prompt_len,"):
            benches.append(path)
    bench_curves(F, benches)
    for job in F.jobs:
        print("\t".join(job))


if __name__ == "__main__":
    main()
