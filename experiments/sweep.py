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
    sweep.py env R ID        shell `export` lines of point ID's parameters and paths
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
AXES = ["dataset", "template", "preset", "method", "k", "prefix_regs", "suffix_regs", "prompt_len", "seed", "device"]
AXIS_INPUTS = AXES + ["regs"]
# Settings: one value per sweep. hashed = part of every point's parameters (and id).
SETTINGS = {
    "name": ("name", None, False), "results": ("path", None, False), "data": ("path", None, False),
    "epochs": ("int", 1, True), "max_minutes": ("float", 0, True), "eval_users": ("int", 500, True),
    "eval_split": ("choice:test|valid", "test", True), "eval_limit": ("int", 0, True), "beam": ("int", 20, True),
    "bench_reps": ("int", 3, True), "bench_batch": ("int", 1, True), "bench_beam": ("int", 20, True),
    "dtype": ("choice:f32|bf16", "f32", True),
    "attn_samples": ("int", 0, True), "train_args": ("str", "", True),
    "threads": ("int", 0, False), "slurm_limit": ("int", 16, False), "point_cmd": ("str", "", False),
    "hist_buckets": ("str", "1-3 4-5 6-9 10-19 20-", False),
}
AXIS_DEFAULTS = {"template": "lcrec", "preset": "small", "method": "earn", "prompt_len": "1024", "seed": "1",
                 "device": "cpu"}
# Layer counts of runtime/preset.c's presets (k must be below N).
PRESET_LAYERS = {"tiny": 4, "small": 8, "base": 12, "llama2-7b": 32, "qwen2.5-7b": 28}
# Presets that are benchmarked on random weights only (dataset=none): never trained here.
BENCH_ONLY_PRESETS = {"llama2-7b", "qwen2.5-7b"}
# dataset=none: bench-only points (earnest bench on the preset's random weights; no training, no evaluation).
NO_DATASET = "none"
MODEL_KEYS = ["dataset", "template", "preset", "method", "k", "prefix_regs", "suffix_regs", "seed", "epochs",
              "max_minutes", "eval_users", "train_args"]
EVAL_KEYS = MODEL_KEYS + ["device", "eval_split", "eval_limit", "beam"]
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
    """(variables, grid calls) of the spec, as sweep.sh's dump_spec printed them."""
    variables, grids = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if not line:
                continue
            parts = line.split(US)
            if parts[0] == "V" and len(parts) == 3:
                variables[parts[1]] = parts[2]
            elif parts[0] == "G":
                g = {}
                for a in parts[1:]:
                    if "=" not in a:
                        raise SpecError("%s: grid argument %r: expected axis=values" % (spec, a))
                    key, val = a.split("=", 1)
                    if key in g:
                        raise SpecError("%s: grid argument %r: axis %s given twice" % (spec, a, key))
                    g[key] = val
                grids.append(g)
            elif parts[0] == "A":
                raise SpecError("%s: %s is an array; axes take space-separated values (k=\"1 2 3\")" % (spec, parts[1]))
            else:
                raise SpecError("%s: cannot read the spec dump line %r" % (spec, line))
    return variables, grids


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
                        % (spec, where, name))
    return vals


def check_int(spec, where, name, v, lo, hi):
    if not re.fullmatch(r"[0-9]+", v) or not lo <= int(v) <= hi:
        raise SpecError("%s: %s: %s=%s: unknown value (an integer in [%d, %d])" % (spec, where, name, v, lo, hi))
    return int(v)


def check_choice(spec, where, name, v, choices):
    if v not in choices:
        raise SpecError("%s: %s: %s=%s: unknown value (known: %s)" % (spec, where, name, v, ", ".join(choices)))
    return v


def reg_pairs(spec, where, axes):
    """The (prefix, suffix) register pairs of a grid, or None for the method's default."""
    if "regs" in axes:
        pairs = []
        for v in axis_values(spec, where, "regs", axes["regs"]):
            m = re.fullmatch(r"([0-9]+),([0-9]+)", v)
            if not m or int(m.group(1)) > 64 or int(m.group(2)) > 64:
                raise SpecError("%s: %s: regs=%s: unknown value (pairs P,S of register counts 0..64, e.g. "
                                "regs=\"1,1 0,1\")" % (spec, where, v))
            pairs.append((int(m.group(1)), int(m.group(2))))
        return pairs
    if "prefix_regs" in axes or "suffix_regs" in axes:
        ps = [check_int(spec, where, "prefix_regs", v, 0, 64) for v in axis_values(spec, where, "prefix_regs",
                                                                                 axes.get("prefix_regs", "1"))]
        ss = [check_int(spec, where, "suffix_regs", v, 0, 64) for v in axis_values(spec, where, "suffix_regs",
                                                                                 axes.get("suffix_regs", "1"))]
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


def grid_points(spec, where, axes, data_root):
    """Every point of one grid call (dicts of axis values), k and registers normalised per method."""
    ds = axis_values(spec, where, "dataset", axes["dataset"])
    for d in ds:
        if d == NO_DATASET:
            continue
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", d):
            raise SpecError("%s: %s: dataset=%s: unknown value (a dataset name)" % (spec, where, d))
        if not os.path.isfile(os.path.join(data_root, d, "meta.json")):
            raise SpecError("%s: %s: dataset=%s: unknown value: no prepared dataset %s/%s/meta.json (make -f "
                            "Makefile.data %s DATA=%s, or set data=DIR)" % (spec, where, d, data_root, d, d, data_root))
    tm = [check_choice(spec, where, "template", v, ["lcrec", "tiger"]) for v in axis_values(spec, where, "template", axes["template"])]
    pr = [check_choice(spec, where, "preset", v, sorted(PRESET_LAYERS)) for v in axis_values(spec, where, "preset", axes["preset"])]
    me = [check_choice(spec, where, "method", v, ["finetune", "earn"]) for v in axis_values(spec, where, "method", axes["method"])]
    ks = [check_int(spec, where, "k", v, 1, 4096) for v in axis_values(spec, where, "k", axes["k"])] if "k" in axes else [None]
    ls = [check_int(spec, where, "prompt_len", v, 1, 65536) for v in axis_values(spec, where, "prompt_len", axes["prompt_len"])]
    se = [check_int(spec, where, "seed", v, 0, 1 << 30) for v in axis_values(spec, where, "seed", axes["seed"])]
    dv = [check_choice(spec, where, "device", v, ["cpu", "cuda"]) for v in axis_values(spec, where, "device", axes["device"])]
    regs = reg_pairs(spec, where, axes)
    out = []
    for d, t, p, m, k, (P, S), L, s, dev in itertools.product(ds, tm, pr, me, ks, regs or [(None, None)], ls, se, dv):
        n = PRESET_LAYERS[p]
        if p in BENCH_ONLY_PRESETS and d != NO_DATASET:
            raise SpecError("%s: %s: preset=%s: unknown value with dataset=%s (the 7B shapes are benchmarked on random "
                            "weights only: dataset=none)" % (spec, where, p, d))
        if m == "finetune":
            k = 0
            P, S = (0, 0) if regs is None else (P, S)
        else:
            k = max(1, n // 4) if k is None else k
            if k >= n:
                raise SpecError("%s: %s: k=%d: unknown value for preset %s (EARN needs 1 <= k < N = %d layers)"
                                % (spec, where, k, p, n))
            P, S = (1, 1) if regs is None else (P, S)
        out.append(dict(dataset=d, template=t, preset=p, method=m, k=k, prefix_regs=P, suffix_regs=S,
                        prompt_len=L, seed=s, device=dev))
    return out


def short_hash(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]


def regs_tag(p):
    return "-r%d.%d" % (p["prefix_regs"], p["suffix_regs"]) if p["method"] == "earn" or p["prefix_regs"] or p["suffix_regs"] else ""


def identify(p):
    """The point's id, its model's id, its evaluation's and its attention analysis' (stable: from the parameters)."""
    head = "%s-%s-%s%s%s" % (p["dataset"], p["preset"], p["method"], "-k%d" % p["k"] if p["method"] == "earn" else "",
                             regs_tag(p))
    pid = "%s-L%d-s%d%s-%s" % (head, p["prompt_len"], p["seed"], "-cuda" if p["device"] == "cuda" else "", short_hash(p))
    mkeys = {k: p[k] for k in MODEL_KEYS}
    mid = "%s-%s-s%d-%s" % (head, p["template"], p["seed"], short_hash(mkeys))
    eid = "%s-%s-%s" % (mid, p["device"], short_hash({k: p[k] for k in EVAL_KEYS}))
    aid = "%s-a%d-%s" % (mid, p["attn_samples"], short_hash({k: p[k] for k in ATTN_KEYS}))
    return pid, mid, eid, aid


def expand(spec, variables, grids, data_root):
    """(settings, [point records]) in grid order, duplicates removed."""
    top, settings = split_spec_vars(variables, spec)
    hashed = {k: settings[k] for k, (_, _, h) in SETTINGS.items() if h}
    if hashed["dtype"] == "f32":
        del hashed["dtype"]  # the default stays out of the parameters: points of earlier sweeps keep their ids
    calls = grids if grids else [{}]
    points, seen = [], set()
    for i, g in enumerate(calls):
        where = "grid call %d" % (i + 1) if grids else "top-level axes"
        axes = merge_axes(spec, where, top, g)
        for ax in grid_points(spec, where, axes, data_root):
            params = dict(ax, **hashed)
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
    """Grid order, but the first point of every model before the others, so that
    points sharing a model mostly start after it is trained (they wait on its lock otherwise)."""
    firsts, rest, seen = [], [], set()
    for p in points:
        (rest if p["model_id"] in seen else firsts).append(p)
        seen.add(p["model_id"])
    return firsts + rest


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
        err.write("  %-4s %s  (model %s; %s %s %s k=%d regs=%d,%d L=%d seed=%d %s)\n"
                  % ("done" if p["id"] in done else "todo", p["id"], p["model_id"], q["dataset"], q["preset"],
                     q["method"], q["k"], q["prefix_regs"], q["suffix_regs"], q["prompt_len"], q["seed"], q["device"]))
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
    for k, v in p.items():
        env["SWEEP_" + k.upper()] = v
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
        params = list(grid["points"][0]["params"]) if grid["points"] else []
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
