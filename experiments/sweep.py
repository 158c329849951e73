#!/usr/bin/python3
"""sweep.py: the Python side of experiments/sweep.sh (plain python3, no packages).

    sweep.py plan --dump D --spec SPEC --src SRC [--results R] [--jobs N] [--cores C]
                  [--mode local|slurm] [--dry-run]
        D is what sweep.sh's `dump_spec` printed while sourcing SPEC: one line per
        grid call ("G<US>axis=value<US>...") and per variable the spec set
        ("V<US>name<US>value"), US = \\037. Validates every axis, setting and value,
        expands the grid (the union of the grid calls, each the cartesian product
        of its axes), gives each point its stable id, checks that RESULTS holds
        this sweep only, and (unless --dry-run) writes RESULTS/sweep.json,
        RESULTS/grid.json, RESULTS/points/<id>/params.json and RESULTS/todo.txt.
        Prints the plan on stderr and shell assignments for sweep.sh on stdout.
    sweep.py env R ID        shell `export` lines of point ID's parameters and paths, and what
                             sweep_work.sh runs for its method or policy (method_env: SWEEP_TRAIN_FLAGS,
                             SWEEP_BENCH_METHODS, SWEEP_BENCH_OWN, SWEEP_BENCH_ON, SWEEP_POLICY_FLAG)
    sweep.py finish R ID --seconds S --threads T
        point.json from params.json + metrics.json (the point command's), atomically
    sweep.py collect R       RESULTS/sweep.csv from every point.json of the grid,
                             under a lock, through a temporary file and a rename
    sweep.py status R        one line per point of the grid: id and done|pending
Errors: one line each, "sweep: ...", exit status 2 (bad input) or 1.
"""
import fcntl
import glob
import hashlib
import itertools
import json
import os
import re
import shlex
import sys

US = "\037"
# The grid axes, in the order of the CSV columns. regs = "P,S" pairs (an
# alternative to the prefix_regs x suffix_regs product).
AXES = ["dataset", "template", "preset", "method", "k", "prefix_regs", "suffix_regs", "prompt_len", "seed", "device",
        "keep_layers", "policy"]
AXIS_INPUTS = AXES + ["regs"]
# The trained methods (earnest train --method): adding one is one line here. Fields:
#   k      the EARN split k is a knob (1 <= k < N, default N/4); otherwise k = 0
#   keep   skiplayers' keep_layers is a knob (1 <= M < N, default N/4: EARN's k, the same prompt compute)
#   regs   (P, S) when the spec gives none; "any": any pair; "P>=1" / "S>=1": that count is the method's
#          knob (at least 1) and the other must be 0; "none": no registers (0,0 only)
#   bench  the method's `earnest bench --method` entry ({P}, {S}, {M}: its knobs) beside `full`
#   train  its `earnest train` flags beyond the common ones
#   on     where bench runs it: "model" (the point's weights) or "preset" (random weights of the preset's
#          N-layer shape and the model's vocabulary: a skiplayers model lacks the layers `full` needs)
#   init   (optional) the method whose model of the same data, template, preset, seed and training settings
#          the training starts from (`earnest train --init`): trained first, by whichever point needs it
METHODS = {
    "finetune":   dict(k=False, keep=False, regs=((0, 0), "any"), bench="", on="model",
                       train="--prefix-regs {P} --suffix-regs {S}"),
    "earn":       dict(k=True, keep=False, regs=((1, 1), "any"), bench="earn", on="model",
                       train="--prefix-regs {P} --suffix-regs {S} --k {K}"),
    "skiplayers": dict(k=False, keep=True, regs=((0, 0), "none"), bench="skiplayers:keep={M}", on="preset",
                       train="--keep-layers {M}"),
    "gist":       dict(k=False, keep=False, regs=((0, 1), "S>=1"), bench="gist:tokens={S}", on="model",
                       train="--suffix-regs {S}"),
    "anllm":      dict(k=False, keep=False, regs=((0, 0), "none"), bench="anllm{ITEMS}", on="model", train=""),
    "pod":        dict(k=False, keep=False, regs=((1, 0), "P>=1"), bench="pod:regs={P}{WORDS}", on="model",
                       train="--prefix-regs {P}"),
    "compress500x": dict(k=False, keep=False, regs=((0, 1), "S>=1"), bench="compress500x:tokens={S}", on="model",
                         train="--suffix-regs {S}", init="finetune"),
}
# Training-free policies (policy=NAME[:key=value,...]) on the finetune model of the same dataset, template,
# preset and seed: KV policies (earnest eval --kv-policy) and prompt policies (--prompt-policy), with
# their keys (runtime/kvpolicy.h, experiments/promptpolicy.h). earnest checks the values again.
KV_BUDGET_KEYS = ("budget", "ratio", "tokens")
POLICIES = {
    "streaming": ("kv", KV_BUDGET_KEYS + ("sink", "rerotate")), "h2o": ("kv", KV_BUDGET_KEYS + ("recent",)),
    "snapkv": ("kv", KV_BUDGET_KEYS + ("window", "kernel", "pool")),
    "pyramidkv": ("kv", KV_BUDGET_KEYS + ("window", "kernel", "pool", "beta")), "tova": ("kv", KV_BUDGET_KEYS),
    "knorm": ("kv", KV_BUDGET_KEYS), "random": ("kv", KV_BUDGET_KEYS + ("seed",)),
    "truncate": ("prompt", ("items",)), "selective": ("prompt", ("ratio", "lm")),
}
NO_POLICY = "none"
# Methods whose attention dump-attn cannot show (it applies neither AnLLM's mask nor compress500x's adapters):
# their points skip attn_samples.
NO_ATTN = {"anllm", "compress500x"}
# Settings: one value per sweep. hashed = part of every point's parameters (and id).
SETTINGS = {
    "name": ("name", None, False), "results": ("path", None, False), "data": ("path", None, False),
    "epochs": ("int", 1, True), "max_minutes": ("float", 0, True), "eval_users": ("int", 500, True),
    "eval_split": ("choice:test|valid", "test", True), "eval_limit": ("int", 0, True), "beam": ("int", 20, True),
    "bench_reps": ("int", 3, True), "bench_batch": ("int", 1, True), "bench_beam": ("int", 20, True),
    "dtype": ("choice:f32|bf16", "f32", True),
    "attn_samples": ("int", 0, True), "train_args": ("str", "", True), "bench_items": ("int", 0, True),
    "threads": ("int", 0, False), "slurm_limit": ("int", 16, False), "point_cmd": ("str", "", False),
    "hist_buckets": ("str", "1-3 4-5 6-9 10-19 20-", False),
}
AXIS_DEFAULTS = {"template": "lcrec", "preset": "small", "method": "earn", "prompt_len": "1024", "seed": "1",
                 "device": "cpu", "policy": NO_POLICY}
# Parameters left out of a point's parameters (and id) at these values, so that the points of sweeps
# written before they existed keep their ids.
OMIT_AT = {"dtype": "f32", "bench_items": 0, "policy": NO_POLICY}
# Layer counts of runtime/preset.c's presets (k must be below N).
PRESET_LAYERS = {"tiny": 4, "small": 8, "base": 12, "llama2-7b": 32, "qwen2.5-7b": 28}
# Presets that are benchmarked on random weights only (dataset=none): never trained here.
BENCH_ONLY_PRESETS = {"llama2-7b", "qwen2.5-7b"}
# dataset=none: bench-only points (earnest bench on the preset's random weights; no training, no evaluation).
NO_DATASET = "none"
MODEL_KEYS = ["dataset", "template", "preset", "method", "k", "prefix_regs", "suffix_regs", "seed", "epochs",
              "max_minutes", "eval_users", "train_args", "keep_layers"]
EVAL_KEYS = MODEL_KEYS + ["device", "eval_split", "eval_limit", "beam", "policy"]
ATTN_KEYS = MODEL_KEYS + ["attn_samples"]
# Metric columns shown first (others follow in name order).
METRIC_ORDER = ["status", "note", "n_layers", "recall@1", "recall@5", "recall@10", "recall@20", "ndcg@1", "ndcg@5",
                "ndcg@10", "ndcg@20", "mostpop_recall@10", "mostpop_ndcg@10", "n_users", "bench_speedup",
                "bench_prefill_speedup", "bench_kv_reduction", "closed_speedup", "closed_kv_reduction"]


class SpecError(Exception):
    pass


def die(msg, status=2):
    sys.stderr.write("sweep: %s\n" % msg)
    sys.exit(status)


def canon_number(v):
    """'7', '7.0' and 7 are the same value (ids must not depend on spelling)."""
    f = float(v)
    return int(f) if f == int(f) else f


def check_setting(spec, name, raw):
    kind, _, _ = SETTINGS[name]
    if kind == "int":
        if not re.fullmatch(r"[0-9]+", raw):
            raise SpecError("%s: setting %s=%r: not a non-negative integer" % (spec, name, raw))
        return int(raw)
    if kind == "float":
        try:
            v = float(raw)
        except ValueError:
            v = -1.0
        if not (v >= 0 and v < 1e9):
            raise SpecError("%s: setting %s=%r: not a non-negative number" % (spec, name, raw))
        return canon_number(v)
    if kind.startswith("choice:"):
        choices = kind[7:].split("|")
        if raw not in choices:
            raise SpecError("%s: setting %s=%r: unknown value (known: %s)" % (spec, name, raw, ", ".join(choices)))
        return raw
    if kind == "name" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw):
        raise SpecError("%s: setting name=%r: use letters, digits, '_', '.', '-'" % (spec, raw))
    return raw


def read_dump(path, spec):
    """(variables, grid calls) of the spec, as sweep.sh's dump_spec printed them; each grid call is
    (its line in the spec or None, {axis: values})."""
    variables, grids = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if not line:
                continue
            parts = line.split(US)
            if parts[0] == "V" and len(parts) == 3:
                variables[parts[1]] = parts[2]
            elif parts[0] == "G":
                at, args = None, parts[1:]
                if args and re.fullmatch(r"@[0-9]+", args[0]):
                    at, args = int(args[0][1:]), args[1:]
                g = {}
                for a in args:
                    if "=" not in a:
                        raise SpecError("%s: %sgrid argument %r: expected axis=values"
                                        % (spec, "line %d: " % at if at else "", a))
                    key, val = a.split("=", 1)
                    if key in g:
                        raise SpecError("%s: %sgrid argument %r: axis %s given twice"
                                        % (spec, "line %d: " % at if at else "", a, key))
                    g[key] = val
                grids.append((at, g))
            elif parts[0] == "A":
                raise SpecError("%s: %s is an array; axes take space-separated values (k=\"1 2 3\")" % (spec, parts[1]))
            else:
                raise SpecError("%s: cannot read the spec dump line %r" % (spec, line))
    return variables, grids


def var_lines(spec):
    """name -> the line of the spec that last assigns it at the start of a line (for messages)."""
    lines = {}
    try:
        with open(spec, encoding="utf-8", errors="replace") as f:
            for n, text in enumerate(f, 1):
                m = re.match(r"\s*(?:export\s+|readonly\s+|declare\s+(?:-\w+\s+)*)?([A-Za-z_][A-Za-z0-9_]*)=", text)
                if m:
                    lines[m.group(1)] = n
    except OSError:
        pass
    return lines


class Where:
    """Where a grid call's values come from, for messages: str() is the grid call
    ("line 12 (grid call 2)"); where(axis) the line that set that axis."""

    def __init__(self, call, origin):
        self.call, self.origin = call, origin

    def __str__(self):
        return self.call

    def __call__(self, axis):
        return self.origin.get(axis, self.call)


def split_spec_vars(variables, spec):
    axes, settings, unknown = {}, {}, []
    for name, raw in variables.items():
        if name.startswith("_"):
            continue  # private helper variables of the spec
        if name in AXIS_INPUTS:
            axes[name] = raw
        elif name in SETTINGS:
            settings[name] = check_setting(spec, name, raw.strip())
        else:
            unknown.append(name)
    if unknown:
        raise SpecError("%s: unknown axis or setting %s (axes: %s; settings: %s; helper variables start with '_')"
                        % (spec, ", ".join(sorted(unknown)), " ".join(AXIS_INPUTS), " ".join(sorted(SETTINGS))))
    for name, (_, default, _) in SETTINGS.items():
        settings.setdefault(name, default)
    return axes, settings


def axis_values(spec, where, name, raw):
    vals = raw.split()
    if not vals:
        raise SpecError("%s: %s: axis %s is empty (an empty grid): give at least one value or leave it out"
                        % (spec, where(name), name))
    return vals


def check_int(spec, where, name, v, lo, hi):
    if not re.fullmatch(r"[0-9]+", v) or not lo <= int(v) <= hi:
        raise SpecError("%s: %s: %s=%s: unknown value (an integer in [%d, %d])" % (spec, where(name), name, v, lo, hi))
    return int(v)


def check_choice(spec, where, name, v, choices):
    if v not in choices:
        raise SpecError("%s: %s: %s=%s: unknown value (known: %s)" % (spec, where(name), name, v, ", ".join(choices)))
    return v


def reg_pairs(spec, where, axes):
    """The (prefix, suffix) register pairs of a grid, or None for the method's default."""
    if "regs" in axes:
        pairs = []
        for v in axis_values(spec, where, "regs", axes["regs"]):
            m = re.fullmatch(r"([0-9]+),([0-9]+)", v)
            if not m or int(m.group(1)) > 64 or int(m.group(2)) > 64:
                raise SpecError("%s: %s: regs=%s: unknown value (pairs P,S of register counts 0..64, e.g. "
                                "regs=\"1,1 0,1\")" % (spec, where("regs"), v))
            pairs.append((int(m.group(1)), int(m.group(2))))
        return pairs
    if "prefix_regs" in axes or "suffix_regs" in axes:  # a count left out: None, the method's (method_point)
        ps = ([check_int(spec, where, "prefix_regs", v, 0, 64) for v in axis_values(spec, where, "prefix_regs",
                                                                                  axes["prefix_regs"])]
              if "prefix_regs" in axes else [None])
        ss = ([check_int(spec, where, "suffix_regs", v, 0, 64) for v in axis_values(spec, where, "suffix_regs",
                                                                                  axes["suffix_regs"])]
              if "suffix_regs" in axes else [None])
        return list(itertools.product(ps, ss))
    return None


def merge_axes(spec, where, top, grid):
    unknown = sorted(set(grid) - set(AXIS_INPUTS))
    if unknown:
        raise SpecError("%s: %s: unknown axis %s (axes: %s)" % (spec, where, ", ".join(unknown), " ".join(AXIS_INPUTS)))
    if "regs" in grid and ("prefix_regs" in grid or "suffix_regs" in grid):
        raise SpecError("%s: %s: give regs=\"P,S ...\" or prefix_regs/suffix_regs, not both" % (spec, where))
    axes = dict(top)
    if "regs" in grid:
        axes.pop("prefix_regs", None)
        axes.pop("suffix_regs", None)
    if "prefix_regs" in grid or "suffix_regs" in grid:
        axes.pop("regs", None)
    if "regs" in axes and ("prefix_regs" in axes or "suffix_regs" in axes):
        raise SpecError("%s: %s: give regs=\"P,S ...\" or prefix_regs/suffix_regs, not both" % (spec, where))
    axes.update(grid)
    if "dataset" not in axes:
        raise SpecError("%s: %s: no dataset (dataset=NAME: a prepared dataset under the data folder)" % (spec, where))
    for name, default in AXIS_DEFAULTS.items():
        axes.setdefault(name, default)
    return axes


def check_policy(spec, where, v):
    """A policy axis value: none, or NAME[:key=value,...] with NAME and keys known; returned canonical
    (numbers spelled one way, so that ids do not depend on spelling)."""
    if v == NO_POLICY:
        return v
    name, _, rest = v.partition(":")
    bad = "%s: %s: policy=%s: " % (spec, where("policy"), v)
    if name not in POLICIES:
        raise SpecError(bad + "unknown policy '%s' (KV policies: %s; prompt policies: %s; or none)"
                        % (name, ", ".join(n for n in POLICIES if POLICIES[n][0] == "kv"),
                           ", ".join(n for n in POLICIES if POLICIES[n][0] == "prompt")))
    keys, out = POLICIES[name][1], []
    for kv in (rest.split(",") if rest else []):
        key, eq, val = kv.partition("=")
        if not eq or not key or not val:
            raise SpecError(bad + "'%s' is not key=value (NAME:key=value,...)" % kv)
        if key not in keys:
            raise SpecError(bad + "unknown key '%s' for %s (keys: %s)" % (key, name, ", ".join(keys)))
        if key in ("lm", "pool"):
            if not re.fullmatch(r"[A-Za-z0-9_./+-]+", val):
                raise SpecError(bad + "%s=%s: use letters, digits and _ . / + - only" % (key, val))
        else:
            try:
                x = float(val)
            except ValueError:
                raise SpecError(bad + "%s=%s is not a number" % (key, val))
            if key in ("budget", "ratio") and not ((0 < x <= 1) if key == "budget" else (0 <= x < 1)):
                raise SpecError(bad + "%s=%s: outside %s" % (key, val, "(0, 1]" if key == "budget" else "[0, 1)"))
            if key not in ("budget", "ratio", "beta") and (x != int(x) or x < 0):
                raise SpecError(bad + "%s=%s is not a non-negative integer" % (key, val))
            val = str(canon_number(x))
        out.append("%s=%s" % (key, val))
    return name + (":" + ",".join(out) if out else "")


def method_point(spec, where, m, n, p, k, keep, regs, P, S):
    """(k, keep_layers, P, S) of a point of method m on a preset of n layers, defaults filled in."""
    info = METHODS[m]
    k = (max(1, n // 4) if k is None else k) if info["k"] else 0
    if info["k"] and k >= n:
        raise SpecError("%s: %s: k=%d: unknown value for preset %s (EARN needs 1 <= k < N = %d layers)"
                        % (spec, where("k"), k, p, n))
    keep = (max(1, n // 4) if keep is None else keep) if info["keep"] else 0
    if info["keep"] and keep >= n:
        raise SpecError("%s: %s: keep_layers=%d: unknown value for preset %s (skiplayers keeps 1 <= M < N = %d "
                        "layers)" % (spec, where("keep_layers"), keep, p, n))
    default, rule = info["regs"]
    if regs is None:
        return k, keep, default[0], default[1]
    # A count the spec left out (prefix_regs or suffix_regs alone): 1 for finetune and EARN (as
    # before the other methods came), else the method's default.
    P = P if P is not None else 1 if rule == "any" else default[0]
    S = S if S is not None else 1 if rule == "any" else default[1]
    given = [n for n in ("regs", "prefix_regs", "suffix_regs") if n in where.origin] or ["regs"]
    rw = ", ".join(sorted({where(n) for n in given}))
    if rule == "none" and (P or S):
        raise SpecError("%s: %s: method=%s with prefix_regs=%d suffix_regs=%d: %s takes no registers (0,0 or leave "
                        "them out)" % (spec, rw, m, P, S, m))
    if rule == "S>=1" and (S < 1 or P):
        raise SpecError("%s: %s: method=%s with prefix_regs=%d suffix_regs=%d: its knob is suffix_regs, the %s "
                        "tokens (at least 1), with no prefix registers" % (spec, rw, m, P, S, m))
    if rule == "P>=1" and (P < 1 or S):
        raise SpecError("%s: %s: method=%s with prefix_regs=%d suffix_regs=%d: its knob is prefix_regs, the "
                        "soft-prompt vectors (at least 1), with no suffix registers" % (spec, rw, m, P, S))
    return k, keep, P, S


def check_datasets(spec, where, ds, data_root):
    for d in ds:
        if d == NO_DATASET:
            continue
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", d):
            raise SpecError("%s: %s: dataset=%s: unknown value (a dataset name)" % (spec, where("dataset"), d))
        if not os.path.isfile(os.path.join(data_root, d, "meta.json")):
            raise SpecError("%s: %s: dataset=%s: unknown value: no prepared dataset %s/%s/meta.json (make -f "
                            "Makefile.data %s DATA=%s, or set data=DIR)" % (spec, where("dataset"), d, data_root, d, d,
                                                                            data_root))


def grid_points(spec, where, axes, data_root):
    """Every point of one grid call (dicts of axis values), k and registers normalised per method."""
    ds = axis_values(spec, where, "dataset", axes["dataset"])
    check_datasets(spec, where, ds, data_root)
    tm = [check_choice(spec, where, "template", v, ["lcrec", "tiger"]) for v in axis_values(spec, where, "template", axes["template"])]
    pr = [check_choice(spec, where, "preset", v, sorted(PRESET_LAYERS)) for v in axis_values(spec, where, "preset", axes["preset"])]
    me = [check_choice(spec, where, "method", v, list(METHODS)) for v in axis_values(spec, where, "method", axes["method"])]
    ks = [check_int(spec, where, "k", v, 1, 4096) for v in axis_values(spec, where, "k", axes["k"])] if "k" in axes else [None]
    kl = ([check_int(spec, where, "keep_layers", v, 1, 4096) for v in axis_values(spec, where, "keep_layers", axes["keep_layers"])]
          if "keep_layers" in axes else [None])
    ls = [check_int(spec, where, "prompt_len", v, 1, 65536) for v in axis_values(spec, where, "prompt_len", axes["prompt_len"])]
    se = [check_int(spec, where, "seed", v, 0, 1 << 30) for v in axis_values(spec, where, "seed", axes["seed"])]
    dv = [check_choice(spec, where, "device", v, ["cpu", "cuda"]) for v in axis_values(spec, where, "device", axes["device"])]
    po = [check_policy(spec, where, v) for v in axis_values(spec, where, "policy", axes["policy"])]
    regs = reg_pairs(spec, where, axes)
    out = []
    for d, t, p, m, k, keep, (P, S), L, s, dev, pol in itertools.product(
            ds, tm, pr, me, ks, kl, regs or [(None, None)], ls, se, dv, po):
        n = PRESET_LAYERS[p]
        if p in BENCH_ONLY_PRESETS and d != NO_DATASET:
            raise SpecError("%s: %s: preset=%s: unknown value with dataset=%s (the 7B shapes are benchmarked on random "
                            "weights only: dataset=none)" % (spec, where("preset"), p, d))
        if pol != NO_POLICY and m != "finetune":
            raise SpecError("%s: %s: policy=%s with method=%s: a training-free policy runs on the finetune model "
                            "(method=finetune policy=...)" % (spec, where, pol, m))
        k1, keep1, P1, S1 = method_point(spec, where, m, n, p, k, keep, regs, P, S)
        pt = dict(dataset=d, template=t, preset=p, method=m, k=k1, prefix_regs=P1, suffix_regs=S1,
                  prompt_len=L, seed=s, device=dev)
        if METHODS[m]["keep"]:
            pt["keep_layers"] = keep1  # only skiplayers has it: the other points keep their ids
        pt["policy"] = pol
        out.append(pt)
    return out


def short_hash(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]


def regs_tag(p):
    return "-r%d.%d" % (p["prefix_regs"], p["suffix_regs"]) if p["method"] == "earn" or p["prefix_regs"] or p["suffix_regs"] else ""


def policy_tag(p):
    """The policy in an id: its spec with everything but letters, digits and dots as '-' (40 characters at most)."""
    pol = p.get("policy", NO_POLICY)
    return "" if pol == NO_POLICY else "-" + re.sub(r"[^A-Za-z0-9.]+", "-", pol).strip("-")[:40]


def identify(p):
    """The point's id, its model's id, its evaluation's and its attention analysis' (stable: from the parameters).
    A policy point's model is the finetune model of the same parameters (its id leaves the policy out)."""
    head = "%s-%s-%s%s%s%s" % (p["dataset"], p["preset"], p["method"], "-k%d" % p["k"] if p["method"] == "earn" else "",
                               "-m%d" % p["keep_layers"] if "keep_layers" in p else "", regs_tag(p))
    pid = "%s%s-L%d-s%d%s-%s" % (head, policy_tag(p), p["prompt_len"], p["seed"],
                                 "-cuda" if p["device"] == "cuda" else "", short_hash(p))
    mkeys = {k: p[k] for k in MODEL_KEYS if k in p}
    mid = "%s-%s-s%d-%s" % (head, p["template"], p["seed"], short_hash(mkeys))
    eid = "%s-%s-%s" % (mid, p["device"], short_hash({k: p[k] for k in EVAL_KEYS if k in p}))
    aid = "%s-a%d-%s" % (mid, p["attn_samples"], short_hash({k: p[k] for k in ATTN_KEYS if k in p}))
    return pid, mid, eid, aid


def expand(spec, variables, grids, data_root):
    """(settings, [point records]) in grid order, duplicates removed."""
    top, settings = split_spec_vars(variables, spec)
    hashed = {k: settings[k] for k, (_, _, h) in SETTINGS.items() if h}
    for k, v in OMIT_AT.items():
        if hashed.get(k) == v:
            del hashed[k]  # the default stays out of the parameters: points of earlier sweeps keep their ids
    at = var_lines(spec)
    top_origin = {name: "line %d" % at[name] if name in at else "top level" for name in top}
    calls = grids if grids else [(None, {})]
    points, seen = [], set()
    for i, (line, g) in enumerate(calls):
        call = ("line %d (grid call %d)" % (line, i + 1) if line else "grid call %d" % (i + 1)) if grids else "top-level axes"
        origin = dict(top_origin)
        origin.update({name: call for name in g})
        if "regs" in g or "prefix_regs" in g or "suffix_regs" in g:
            for name in ("regs", "prefix_regs", "suffix_regs"):
                if name not in g:
                    origin.pop(name, None)
        where = Where(call, origin)
        axes = merge_axes(spec, where, top, g)
        for ax in grid_points(spec, where, axes, data_root):
            params = dict(ax, **hashed)
            for k, v in OMIT_AT.items():
                if params.get(k) == v:
                    del params[k]
            if params.get("dtype") == "bf16" and params["device"] != "cuda":
                raise SpecError("%s: %s: dtype=bf16 with device=%s: the CPU runtime computes in f32 only"
                                % (spec, where, params["device"]))
            pid, mid, eid, aid = identify(params)
            if pid in seen:
                continue
            seen.add(pid)
            points.append(dict(id=pid, model_id=mid, eval_id=eid, attn_id=aid, params=params))
    if not points:
        raise SpecError("%s: the grid is empty: no point to run" % spec)
    return settings, points


def write_atomic(path, text):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_results(results, name):
    """RESULTS must be absent, empty, or this sweep's: never another sweep's points."""
    if not os.path.exists(results):
        return
    if not os.path.isdir(results):
        raise SpecError("results %s: not a directory" % results)
    meta = os.path.join(results, "sweep.json")
    if os.path.exists(meta):
        try:
            other = load_json(meta).get("sweep")
        except (OSError, ValueError) as ex:
            raise SpecError("%s: unreadable (%s)" % (meta, ex))
        if other != name:
            raise SpecError("results %s holds sweep '%s' (%s), not '%s': pick another results folder (--results DIR)"
                            % (results, other, meta, name))
    elif os.listdir(results):
        raise SpecError("results %s is not empty and holds no sweep.json: not a sweep results folder; pick another "
                        "(--results DIR)" % results)
    foreign = []
    for f in sorted(glob.glob(os.path.join(results, "points", "*", "params.json"))):
        try:
            s = load_json(f).get("sweep")
        except (OSError, ValueError):
            s = "(unreadable)"
        if s != name:
            foreign.append("%s (sweep '%s')" % (os.path.dirname(f), s))
    if foreign:
        raise SpecError("results %s holds %d point(s) of another sweep, e.g. %s: pick another results folder"
                        % (results, len(foreign), foreign[0]))


def split_threads(mode, jobs, cores, threads):
    """(jobs, threads per job) with jobs x threads <= cores locally; warnings on stderr."""
    if mode == "slurm":
        return jobs, threads or 1
    if jobs > cores:
        sys.stderr.write("sweep: --jobs %d > %d cores: running %d jobs\n" % (jobs, cores, cores))
        jobs = cores
    if threads == 0:
        threads = max(1, cores // jobs)
    elif jobs * threads > cores:
        sys.stderr.write("sweep: threads=%d x %d jobs > %d cores: %d thread(s) per job\n"
                         % (threads, jobs, cores, max(1, cores // jobs)))
        threads = max(1, cores // jobs)
    return jobs, threads


def leaders_first(points):
    """Grid order, but the first point of every model before the others, and the first points of models that
    start from another model (METHODS' init: compress500x) after those of the models they start from, so that
    points sharing a model mostly start after it is trained (they wait on its lock otherwise)."""
    firsts, later, rest, seen = [], [], [], set()
    for p in points:
        if p["model_id"] in seen:
            rest.append(p)
        else:
            (later if METHODS[p["params"]["method"]].get("init") else firsts).append(p)
        seen.add(p["model_id"])
    return firsts + later + rest


def print_plan(points, done, settings, results, jobs, threads, mode):
    models = {}
    for p in points:
        models.setdefault(p["model_id"], []).append(p["id"])
    todo = [p for p in points if p["id"] not in done]
    err = sys.stderr
    err.write("sweep %s: %d points (%d done, %d to run), %d models, results %s\n"
              % (settings["name"], len(points), len(done), len(todo), len(models), results))
    err.write("  %s\n" % ("local: %d job(s) x %d thread(s)" % (jobs, threads) if mode == "local" else
                          "slurm: array of %d task(s), at most %d at once, %d cpu(s) each" % (len(todo), jobs, threads)))
    for p in points:
        q = p["params"]
        extra = "".join(" %s=%s" % (key, q[key]) for key in ("keep_layers", "policy") if key in q)
        err.write("  %-4s %s  (model %s; %s %s %s k=%d regs=%d,%d%s L=%d seed=%d %s)\n"
                  % ("done" if p["id"] in done else "todo", p["id"], p["model_id"], q["dataset"], q["preset"],
                     q["method"], q["k"], q["prefix_regs"], q["suffix_regs"], extra, q["prompt_len"], q["seed"],
                     q["device"]))
    shared = sum(1 for ids in models.values() if len(ids) > 1)
    if shared:
        err.write("  %d model(s) shared by several points (trained once)\n" % shared)
    bad = [p["id"] for p in points if p["params"]["method"] == "earn" and p["params"]["suffix_regs"] == 0]
    if bad and not settings["point_cmd"]:
        err.write("  note: %d point(s) use EARN with 0 suffix registers, which this runtime cannot train (no token "
                  "reaches the layers above k to predict the first code token); they are recorded as unsupported\n"
                  % len(bad))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(results):
    """Temporaries of a planner killed while writing (their PID is gone)."""
    for f in glob.glob(os.path.join(results, "*.tmp.*")):
        suffix = f.rsplit(".", 1)[-1]
        if suffix.isdigit() and not pid_alive(int(suffix)):
            os.remove(f)


def write_plan(results, settings, points, meta, order):
    os.makedirs(os.path.join(results, "points"), exist_ok=True)
    remove_stale_temporaries(results)
    write_atomic(os.path.join(results, "sweep.json"), json.dumps(meta, indent=2) + "\n")
    write_atomic(os.path.join(results, "grid.json"),
                 json.dumps({"sweep": settings["name"], "points": points}, indent=1) + "\n")
    for p in points:
        d = os.path.join(results, "points", p["id"])
        os.makedirs(d, exist_ok=True)
        if not os.path.exists(os.path.join(d, "params.json")):
            write_atomic(os.path.join(d, "params.json"), json.dumps(dict(p, sweep=settings["name"]), indent=2) + "\n")
    write_atomic(os.path.join(results, "todo.txt"), "".join(p["id"] + "\n" for p in order))


def cmd_plan(a):
    spec = a["--spec"]
    try:
        variables, grids = read_dump(a["--dump"], spec)
        name = variables.get("name") or re.sub(r"\.(sh|spec)$", "", os.path.basename(spec))
        variables["name"] = name
        data_root = os.path.abspath(variables.get("data") or os.environ.get("EARNEST_DATA") or "data")
        settings, points = expand(spec, variables, grids, data_root)
        results = os.path.abspath(a.get("--results") or settings["results"]
                                  or os.path.join(a["--src"], "out", "sweeps", settings["name"]))
        check_results(results, settings["name"])
    except SpecError as ex:
        die(str(ex))
    jobs, threads = split_threads(a["--mode"], int(a.get("--jobs") or (settings["slurm_limit"] if a["--mode"] == "slurm" else 1)),
                                  int(a["--cores"]), settings["threads"])
    done = {p["id"] for p in points if os.path.exists(os.path.join(results, "points", p["id"], "point.json"))}
    order = [p for p in leaders_first(points) if p["id"] not in done]
    if "--quiet" not in a:
        print_plan(points, done, settings, results, jobs, threads, a["--mode"])
    point_cmd = settings["point_cmd"] or "bash " + shlex.quote(os.path.join(a["--src"], "experiments", "sweep_work.sh"))
    meta = {"format": "earnest-sweep", "version": 1, "sweep": settings["name"], "spec": os.path.abspath(spec),
            "data": data_root, "earnest": os.path.abspath(a["--earnest"]), "src": a["--src"],
            "point_cmd": point_cmd,
            "hist_buckets": settings["hist_buckets"]}
    if "--dry-run" not in a:
        write_plan(results, settings, points, meta, order)
    devices = sorted({p["params"]["device"] for p in points})
    out = dict(NAME=settings["name"], RESULTS=results, JOBS=jobs, THREADS=threads, N_POINTS=len(points),
               N_TODO=len(order), DEVICES=" ".join(devices), DEFAULT_CMD=int(not settings["point_cmd"]), TODO_IDS=" ".join(p["id"] for p in order))
    for k, v in out.items():
        print("%s=%s" % (k, shlex.quote(str(v))))


def point_record(results, pid):
    path = os.path.join(results, "points", pid, "params.json")
    try:
        return load_json(path)
    except (OSError, ValueError) as ex:
        die("%s: %s (is %s a point of the sweep in %s?)" % (path, ex, pid, results), 1)


def init_params(p):
    """The parameters of the point whose model point p's training starts from (METHODS' init), or None:
    the same data, template, preset, seed and training settings, the init method with its default knobs."""
    m = METHODS[p["method"]].get("init")
    if not m:
        return None
    q = {k: v for k, v in p.items() if k not in ("keep_layers", "policy")}
    q["method"] = m
    q["k"], _, q["prefix_regs"], q["suffix_regs"] = method_point("", None, m, PRESET_LAYERS[p["preset"]], p["preset"],
                                                                 None, None, None, None, None)
    return q


def train_flags(p):
    info = METHODS[p["method"]]
    return info["train"].format(P=p["prefix_regs"], S=p["suffix_regs"], K=p["k"], M=p.get("keep_layers", 0))


def method_env(p):
    """What sweep_work.sh runs for point p, from the METHODS and POLICIES tables:
    SWEEP_TRAIN_FLAGS (earnest train's method flags), SWEEP_BENCH_METHODS (earnest bench --method: full, then
    the point's own entry unless it is full), SWEEP_BENCH_OWN (the bench CSV's method column of the point's
    own row), SWEEP_BENCH_ON (model|preset), SWEEP_POLICY_FLAG (--kv-policy, --prompt-policy or empty),
    SWEEP_INIT_METHOD, SWEEP_INIT_MODEL_ID and SWEEP_INIT_TRAIN_FLAGS (the model its training starts from,
    METHODS' init; empty for the others)."""
    info = METHODS[p["method"]]
    f = dict(P=p["prefix_regs"], S=p["suffix_regs"], K=p["k"], M=p.get("keep_layers", 0),
             ITEMS=":items=%d" % p["bench_items"] if p.get("bench_items") else "",
             WORDS=",words=0" if p["template"] == "tiger" else "")
    pol = p.get("policy", NO_POLICY)
    own = pol if pol != NO_POLICY else info["bench"].format(**f)
    q = init_params(p)
    init = dict(SWEEP_INIT_METHOD=q["method"] if q else "", SWEEP_INIT_MODEL_ID=identify(q)[1] if q else "",
                SWEEP_INIT_TRAIN_FLAGS=train_flags(q) if q else "")
    return dict(init, SWEEP_TRAIN_FLAGS=train_flags(p),
                SWEEP_BENCH_METHODS="full," + own if own else "full",
                SWEEP_BENCH_OWN=(own or "full").split(":")[0],
                SWEEP_BENCH_ON=info["on"], SWEEP_ATTN_OK=int(p["method"] not in NO_ATTN),
                SWEEP_POLICY_FLAG="" if pol == NO_POLICY else "--%s-policy" % POLICIES[pol.split(":")[0]][0])


def cmd_env(a):
    results, pid = os.path.abspath(a["args"][0]), a["args"][1]
    meta = load_json(os.path.join(results, "sweep.json"))
    rec = point_record(results, pid)
    p = rec["params"]
    env = dict(SWEEP_NAME=meta["sweep"], SWEEP_ID=pid, SWEEP_RESULTS=results,
               SWEEP_POINT_DIR=os.path.join(results, "points", pid), SWEEP_MODEL_ID=rec["model_id"],
               SWEEP_MODEL_DIR=os.path.join(results, "models", rec["model_id"]), SWEEP_EVAL_ID=rec["eval_id"],
               SWEEP_EVAL_DIR=os.path.join(results, "evals", rec["eval_id"]), SWEEP_ATTN_ID=rec["attn_id"],
               SWEEP_ATTN_DIR=os.path.join(results, "attn", rec["attn_id"]),
               SWEEP_DATA=os.path.join(meta["data"], p["dataset"]), SWEEP_EARNEST=meta["earnest"],
               SWEEP_SRC=meta["src"], SWEEP_POINT_CMD=meta["point_cmd"], SWEEP_HIST_BUCKETS=meta["hist_buckets"],
               SWEEP_N_LAYERS=PRESET_LAYERS[p["preset"]])
    env.update(SWEEP_KEEP_LAYERS=0, SWEEP_POLICY=NO_POLICY, SWEEP_BENCH_ITEMS=0)  # absent from older points
    for k, v in p.items():
        env["SWEEP_" + k.upper()] = v
    env.update(method_env(p))
    for k, v in env.items():
        print("export %s=%s" % (k, shlex.quote(str(v))))


def cmd_finish(a):
    results, pid = os.path.abspath(a["args"][0]), a["args"][1]
    d = os.path.join(results, "points", pid)
    rec = point_record(results, pid)
    mpath = os.path.join(d, "metrics.json")
    try:
        metrics = load_json(mpath)
    except (OSError, ValueError) as ex:
        die("%s: the point command left no readable metrics (%s)" % (mpath, ex), 1)
    if not isinstance(metrics, dict) or any(isinstance(v, (dict, list)) for v in metrics.values()):
        die("%s: expected one flat JSON object of numbers, strings and nulls" % mpath, 1)
    metrics.setdefault("status", "done")
    point = {"format": "earnest-sweep-point", "sweep": rec["sweep"], "id": pid, "model_id": rec["model_id"],
             "params": rec["params"], "metrics": metrics,
             "run": {"seconds": float(a["--seconds"]), "threads": int(a["--threads"]), "host": os.uname().nodename,
                     "slurm_job": os.environ.get("SLURM_JOB_ID")}}
    write_atomic(os.path.join(d, "point.json"), json.dumps(point, indent=2) + "\n")


def csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        v = "%.10g" % v
    s = str(v)
    return '"%s"' % s.replace('"', '""') if any(c in s for c in ',"\n') else s


def cmd_collect(a):
    results = os.path.abspath(a["args"][0])
    grid = load_json(os.path.join(results, "grid.json"))
    with open(os.path.join(results, ".collect.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one assembler at a time; the last one sees every point
        for stale in glob.glob(os.path.join(results, "sweep.csv.tmp.*")):
            os.remove(stale)  # a killed assembler's; no other is running now
        rows = []
        for p in grid["points"]:
            f = os.path.join(results, "points", p["id"], "point.json")
            if os.path.exists(f):
                rows.append(load_json(f))
        params = []  # every point's parameters, first seen first (a skiplayers point adds keep_layers, ...)
        for p in grid["points"]:
            params += [k for k in p["params"] if k not in params]
        keys = set().union(*[r["metrics"] for r in rows]) if rows else set()
        metrics = [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))
        lines = [",".join(["id", "sweep", "model_id"] + params + metrics)]
        for r in rows:
            cells = [r["id"], r["sweep"], r["model_id"]] + [r["params"].get(k) for k in params]
            lines.append(",".join(csv_cell(c) for c in cells + [r["metrics"].get(k) for k in metrics]))
        write_atomic(os.path.join(results, "sweep.csv"), "\n".join(lines) + "\n")
    known = {p["id"] for p in grid["points"]}
    extra = [f for f in glob.glob(os.path.join(results, "points", "*", "point.json"))
             if os.path.basename(os.path.dirname(f)) not in known]
    if extra and "--quiet" not in a:
        sys.stderr.write("sweep: %d finished point(s) in %s are no longer in the spec's grid; not in sweep.csv\n"
                         % (len(extra), results))
    if "--quiet" not in a:
        sys.stderr.write("sweep: %s/sweep.csv: %d of %d points\n" % (results, len(rows), len(grid["points"])))


def cmd_status(a):
    results = os.path.abspath(a["args"][0])
    for p in load_json(os.path.join(results, "grid.json"))["points"]:
        done = os.path.exists(os.path.join(results, "points", p["id"], "point.json"))
        print("%s %s" % (p["id"], "done" if done else "pending"))


def parse_args(argv):
    a, args, i = {}, [], 0
    while i < len(argv):
        if argv[i] in ("--dry-run", "--quiet"):
            a[argv[i]] = True
        elif argv[i].startswith("--"):
            if i + 1 >= len(argv):
                die("%s needs a value" % argv[i])
            a[argv[i]] = argv[i + 1]
            i += 1
        else:
            args.append(argv[i])
        i += 1
    a["args"] = args
    return a


def main():
    cmds = {"plan": (cmd_plan, 0), "env": (cmd_env, 2), "finish": (cmd_finish, 2), "collect": (cmd_collect, 1),
            "status": (cmd_status, 1)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        die("usage: sweep.py plan|env|finish|collect|status ... (see the header of %s)" % sys.argv[0])
    fn, nargs = cmds[sys.argv[1]]
    a = parse_args(sys.argv[2:])
    if len(a["args"]) != nargs:
        die("%s: expected %d argument(s), got %d" % (sys.argv[1], nargs, len(a["args"])))
    fn(a)


if __name__ == "__main__":
    main()
