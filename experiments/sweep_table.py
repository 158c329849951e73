#!/usr/bin/python3
"""sweep_table.py: a sweep's methods side by side, as a Markdown table (the baselines
table of issue 11; experiments/beauty_table.sh draws it from the beauty sweep).

    sweep_table.py --csv SWEEP.csv [--grid GRID.json] --out TABLE.md [--title TEXT]

One row per point of the sweep CSV (experiments/sweep.py collect): the method and
its knobs (a policy point: the policy on the finetune model), Recall@10, NDCG@10,
Recall@20, NDCG@20, omega, the prefill/decode split, gamma and sigma. Then MostPop.
With --grid, the grid's points that have no row yet are listed as "not yet run",
so a table drawn mid-campaign says what is missing.

  omega        the point's total time (prefill + decode of one prompt, beam search)
               over `full`'s on the same weights in the same `earnest bench` run,
               at the sweep's bench prompt length (bench_speedup)
  prefill, decode  the point's own bench row, in ms
  omega (eval) the finetune point's evaluation time (prefill + decode over the test
               users, real prompts) over this point's: end to end, but from runs at
               different moments of a possibly shared machine
  gamma        KV reduction in % against the finetune point of the same dataset,
               template, preset and seed: 100 (1 - sigma / sigma_finetune). It equals
               eval's own gamma for every method but skiplayers, whose eval compares
               with its own (shallower) shape
  sigma        KV bytes per user after the last generated token (eval, test users)
Errors: "sweep_table: ...", exit status 1; the table is written atomically.
"""
import csv
import json
import os
import sys

COLUMNS = ["method", "Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "omega", "prefill ms", "decode ms", "omega (eval)",
           "gamma %", "KV bytes / user"]
# Row labels of the trained methods, from a point's parameters (a method without one: its name).
LABELS = {
    "finetune": lambda r: "Finetune",
    "earn": lambda r: "EARN (k = %s, %s+%s registers)" % (r["k"], r["prefix_regs"], r["suffix_regs"]),
    "skiplayers": lambda r: "SkipLayers (first %s layers)" % r.get("keep_layers", "?"),
    "gist": lambda r: "Gist (%s gist tokens)" % r["suffix_regs"],
    "anllm": lambda r: "AnLLM (an anchor per item)",
    "pod": lambda r: "POD (%s soft-prompt vectors)" % r["prefix_regs"],
    "compress500x": lambda r: "500xCompressor (%s compression tokens)" % r["suffix_regs"],
}
POLICY_LABELS = {"streaming": "StreamingLLM", "h2o": "H2O", "snapkv": "SnapKV", "pyramidkv": "PyramidKV", "tova": "TOVA",
                 "knorm": "K-norm", "random": "random", "truncate": "truncation", "selective": "Selective-Context"}


def die(msg):
    sys.stderr.write("sweep_table: %s\n" % msg)
    sys.exit(1)


def label(r):
    pol = r.get("policy") or "none"
    if pol != "none":
        name, _, keys = pol.partition(":")
        return "%s (%s) on Finetune" % (POLICY_LABELS.get(name, name), keys.replace(",", ", ") or "defaults")
    return LABELS.get(r["method"], lambda r: r["method"])(r)


def num(r, key):
    v = r.get(key, "")
    try:
        return float(v) if v not in ("", None) else None
    except ValueError:
        return None


def fmt(v, spec):
    return "" if v is None else spec % v


def group_key(r):
    return tuple(r.get(k, "") for k in ("dataset", "template", "preset", "seed"))


def finetune_figures(rows):
    """(dataset, template, preset, seed) -> the plain finetune point's (sigma, eval total ms)."""
    out = {}
    for r in rows:
        if r["method"] == "finetune" and (r.get("policy") or "none") == "none" and num(r, "eval_sigma"):
            out[group_key(r)] = (num(r, "eval_sigma"), num(r, "eval_total_ms"))
    return out


def table_row(r, ft):
    if r.get("status", "done") != "done":
        return [label(r)] + [""] * 9 + ["(%s%s)" % (r.get("status"), ": " + r["note"] if r.get("note") else "")]
    sigma, ms = num(r, "eval_sigma"), num(r, "eval_total_ms")
    base, base_ms = ft.get(group_key(r), (None, None))
    gamma = 100.0 * (1.0 - sigma / base) if sigma is not None and base else None
    omega_eval = base_ms / ms if base_ms and ms else None
    return [label(r), fmt(num(r, "recall@10"), "%.4f"), fmt(num(r, "ndcg@10"), "%.4f"), fmt(num(r, "recall@20"), "%.4f"),
            fmt(num(r, "ndcg@20"), "%.4f"), fmt(num(r, "bench_speedup"), "%.2f"), fmt(num(r, "bench_prefill_ms"), "%.2f"),
            fmt(num(r, "bench_decode_ms"), "%.2f"), fmt(omega_eval, "%.2f"), fmt(gamma, "%.1f"), fmt(sigma, "%.0f")]


def order(rows):
    """Trained methods first (finetune first), then the policies, each in the CSV's (grid) order."""
    return sorted(rows, key=lambda r: ((r.get("policy") or "none") != "none", r["method"] != "finetune"))


def missing_rows(grid_path, have):
    try:
        grid = json.load(open(grid_path, encoding="utf-8"))
    except (OSError, ValueError) as ex:
        die("%s: %s" % (grid_path, ex))
    out = []
    for p in grid["points"]:
        if p["id"] not in have:
            r = {k: str(v) for k, v in p["params"].items()}
            out.append([label(r)] + [""] * 9 + ["(not yet run)"])
    return out


def render(rows, extra, title):
    ft = finetune_figures(rows)
    lines = ["# %s" % title, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in order(rows):
        lines.append("| " + " | ".join(table_row(r, ft)) + " |")
    for cells in extra:
        lines.append("| " + " | ".join(cells) + " |")
    mp = [r for r in rows if num(r, "mostpop_recall@10") is not None]
    if mp:
        r = mp[0]
        lines.append("| MostPop | %s | %s | %s | %s | | | | | | |" % tuple(
            fmt(num(r, "mostpop_" + k), "%.4f") for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")))
    done = [r for r in rows if r.get("status", "done") == "done"]
    if done:
        r = done[0]
        lines += ["", "%s, %s template, %s preset, seed %s, %s split (%s users), beam %s; %s epoch(s) per training. "
                  "omega, prefill and decode: `earnest bench` at %s prompt tokens (batch %s, beam %s, median of %s) "
                  "against `full` on the same weights in the same run; omega (eval) and gamma against the finetune "
                  "row's evaluation time and KV bytes per user." % (r.get("dataset"), r.get("template"), r.get("preset"), r.get("seed"),
                                 r.get("eval_split"), r.get("n_users"), r.get("beam"), r.get("epochs"),
                                 r.get("prompt_len"), r.get("bench_batch"), r.get("bench_beam"), r.get("bench_reps"))]
    return "\n".join(lines) + "\n"


def main():
    a, argv = {}, sys.argv[1:]
    if len(argv) % 2 or not argv:
        die("usage: sweep_table.py --csv SWEEP.csv [--grid GRID.json] --out TABLE.md [--title TEXT]")
    for i in range(0, len(argv), 2):
        if argv[i] not in ("--csv", "--grid", "--out", "--title"):
            die("unknown option %r (options: --csv, --grid, --out, --title)" % argv[i])
        a[argv[i]] = argv[i + 1]
    if "--csv" not in a or "--out" not in a:
        die("--csv and --out are required")
    try:
        rows = list(csv.DictReader(open(a["--csv"], encoding="utf-8")))
    except OSError as ex:
        die("%s: %s" % (a["--csv"], ex))
    for n, r in enumerate(rows, 2):
        if not r.get("method") or "id" not in r:
            die("%s:%d: no method or id column: not a sweep CSV (experiments/sweep.py collect)" % (a["--csv"], n))
    extra = missing_rows(a["--grid"], {r["id"] for r in rows}) if a.get("--grid") else []
    text = render(rows, extra, a.get("--title") or "Methods side by side")
    tmp = "%s.tmp.%d" % (a["--out"], os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, a["--out"])


if __name__ == "__main__":
    main()
