// kvpolicy.c: see kvpolicy.h.
#include "runtime/kvpolicy.h"
#include "runtime/ops.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Names, defaults, specs

static const char *const KVP_NAMES[KVP_COUNT] = {"none", "streaming", "h2o", "snapkv",
                                                 "pyramidkv", "tova", "knorm", "random"};

// Keys each policy accepts, beyond budget and tokens.
static const char *const KVP_KEYS[KVP_COUNT] = {"", "sink, rerotate", "recent", "window, kernel, pool",
                                                "window, kernel, pool, beta", "", "", "seed"};

const char *kvpolicy_name(KVPolicyKind kind) {
    CHECK(kind >= 0 && kind < KVP_COUNT, "kvpolicy_name: kind %d", (int)kind);
    return KVP_NAMES[kind];
}

void kvpolicy_default(KVPolicy *p, KVPolicyKind kind) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->budget = 0.5;
    p->sink = 4;
    p->recent = -1;
    p->window = 32;
    p->kernel = 5;
    p->pool = KVP_POOL_AVG;
    p->beta = 20.0;
}

// Whether `key` is one of the names in `list` ("a, b, c").
static int key_in(const char *key, const char *list) {
    size_t n = strlen(key);
    for (const char *s = list; *s;) {
        while (*s == ' ') s++;
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len == n && !strncmp(s, key, n)) return 1;
        s += len + (end ? 1 : 0);
    }
    return 0;
}

// A whole-string integer in [lo, hi].
static int parse_int(long long *out, const char *v, long long lo, long long hi) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

// A whole-string finite number.
static int parse_num(double *out, const char *v) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x)) return -1;
    *out = x;
    return 0;
}

// Sets one key of p from its text value.
static int set_key(KVPolicy *p, const char *key, const char *val, int *have_budget, int *have_tokens, Error *e) {
    const char *name = KVP_NAMES[p->kind];
    long long i;
    double x;
    if (p->kind == KVP_NONE) return err_set(e, "none: takes no keys (got '%s')", key);
    if (!strcmp(key, "ratio")) {
        if (parse_num(&x, val) || !(x >= 0.0 && x < 1.0))
            return err_set(e, "%s: ratio '%s' is not a number in [0, 1) (the fraction removed; budget=R keeps R)",
                           name, val);
        if (*have_budget) return err_set(e, "%s: give budget or ratio, once", name);
        p->budget = 1.0 - x;
        *have_budget = 1;
    } else if (!strcmp(key, "budget")) {
        if (*have_budget) return err_set(e, "%s: give budget or ratio, once", name);
        if (parse_num(&x, val) || !(x > 0.0 && x <= 1.0))
            return err_set(e, "%s: budget '%s' is not a number in (0, 1] (a fraction of the prompt; tokens=N "
                           "keeps N entries)", name, val);
        p->budget = x;
        *have_budget = 1;
    } else if (!strcmp(key, "tokens")) {
        if (parse_int(&i, val, 1, 1 << 30)) return err_set(e, "%s: tokens '%s' is not an integer >= 1", name, val);
        p->tokens = (int)i;
        *have_tokens = 1;
    } else if (!key_in(key, KVP_KEYS[p->kind])) {
        return err_set(e, "%s: unknown key '%s' (keys: budget, ratio, tokens%s%s)", name, key, *KVP_KEYS[p->kind] ? ", " : "",
                       KVP_KEYS[p->kind]);
    } else if (!strcmp(key, "sink") || !strcmp(key, "recent") || !strcmp(key, "window")) {
        long long lo = strcmp(key, "window") ? 0 : 1;
        if (parse_int(&i, val, lo, 1 << 30)) return err_set(e, "%s: %s '%s' is not an integer >= %lld", name, key, val, lo);
        *(!strcmp(key, "sink") ? &p->sink : !strcmp(key, "recent") ? &p->recent : &p->window) = (int)i;
    } else if (!strcmp(key, "kernel")) {
        if (parse_int(&i, val, 1, 255) || i % 2 == 0)
            return err_set(e, "%s: kernel '%s' is not an odd integer in [1, 255]", name, val);
        p->kernel = (int)i;
    } else if (!strcmp(key, "rerotate")) {
        if (strcmp(val, "0") && strcmp(val, "1")) return err_set(e, "%s: rerotate '%s' is not 0 or 1", name, val);
        p->rerotate = val[0] == '1';
    } else if (!strcmp(key, "pool")) {
        if (strcmp(val, "avg") && strcmp(val, "max")) return err_set(e, "%s: pool '%s' is not avg or max", name, val);
        p->pool = strcmp(val, "max") ? KVP_POOL_AVG : KVP_POOL_MAX;
    } else if (!strcmp(key, "beta")) {
        if (parse_num(&x, val) || x < 1.0) return err_set(e, "%s: beta '%s' is not a number >= 1", name, val);
        p->beta = x;
    } else { // seed
        if (parse_int(&i, val, 0, (long long)1 << 62)) return err_set(e, "%s: seed '%s' is not an integer >= 0", name, val);
        p->seed = (uint64_t)i;
    }
    return 0;
}

typedef struct {
    KVPolicy *p;
    int have_budget, have_tokens;
} SetKeyCtx;
static int set_key_cb(void *ctx, const char *key, const char *val, Error *e) {
    SetKeyCtx *c = ctx;
    return set_key(c->p, key, val, &c->have_budget, &c->have_tokens, e);
}

int kvpolicy_parse(KVPolicy *p, const char *spec, Error *e) {
    char buf[512];
    if (strlen(spec) >= sizeof buf) return err_set(e, "policy spec longer than %zu characters", sizeof buf - 1);
    strcpy(buf, spec);
    char *params = strchr(buf, ':');
    if (params) *params++ = '\0';
    int kind = -1;
    for (int k = 0; k < KVP_COUNT; k++)
        if (!strcmp(buf, KVP_NAMES[k])) kind = k;
    if (kind < 0)
        return err_set(e, "unknown policy '%s' (known: none, streaming, h2o, snapkv, pyramidkv, tova, knorm, random)",
                       buf);
    kvpolicy_default(p, (KVPolicyKind)kind);
    if (!params) return 0;
    SetKeyCtx ctx = {p, 0, 0};
    if (spec_params_each(params, buf, spec, set_key_cb, &ctx, e)) return -1;
    if (ctx.have_budget && ctx.have_tokens) return err_set(e, "%s: give budget (or ratio) or tokens, not both", buf);
    if (ctx.have_tokens) p->budget = 0.0;
    return 0;
}

int kvpolicy_params(KVPolicyParam *out, const KVPolicy *p) {
    int n = 0;
    if (p->kind == KVP_NONE) return 0;
    if (p->tokens > 0) out[n++] = (KVPolicyParam){"tokens", p->tokens, NULL};
    else out[n++] = (KVPolicyParam){"budget", p->budget, NULL};
    switch (p->kind) {
    case KVP_STREAMING:
        out[n++] = (KVPolicyParam){"sink", p->sink, NULL};
        out[n++] = (KVPolicyParam){"rerotate", p->rerotate, NULL};
        break;
    case KVP_H2O:
        if (p->recent >= 0) out[n++] = (KVPolicyParam){"recent", p->recent, NULL};
        else out[n++] = (KVPolicyParam){"recent", 0, "half"};
        break;
    case KVP_SNAPKV:
    case KVP_PYRAMIDKV:
        out[n++] = (KVPolicyParam){"window", p->window, NULL};
        out[n++] = (KVPolicyParam){"kernel", p->kernel, NULL};
        out[n++] = (KVPolicyParam){"pool", 0, p->pool == KVP_POOL_MAX ? "max" : "avg"};
        if (p->kind == KVP_PYRAMIDKV) out[n++] = (KVPolicyParam){"beta", p->beta, NULL};
        break;
    case KVP_RANDOM: out[n++] = (KVPolicyParam){"seed", (double)p->seed, NULL}; break;
    default: break;
    }
    return n;
}

void kvpolicy_format(char *out, size_t n, const KVPolicy *p) {
    KVPolicyParam prm[KVPOLICY_MAX_PARAMS];
    int np = kvpolicy_params(prm, p);
    size_t at = (size_t)snprintf(out, n, "%s", KVP_NAMES[p->kind]);
    for (int i = 0; i < np && at < n; i++) {
        if (prm[i].str) at += (size_t)snprintf(out + at, n - at, "%s%s=%s", i ? "," : ":", prm[i].key, prm[i].str);
        else at += (size_t)snprintf(out + at, n - at, "%s%s=%.10g", i ? "," : ":", prm[i].key, prm[i].num);
    }
}

// ---------------------------------------------------------------------------
// Budgets

int kvpolicy_budget(const KVPolicy *p, int n) {
    CHECK(n >= 1, "kvpolicy_budget: prompt of %d tokens", n);
    long long C = p->tokens > 0 ? p->tokens : (long long)ceil(p->budget * (double)n - 1e-9);
    if (C < 1) C = 1;
    return C < n ? (int)C : n;
}

int kvpolicy_window(int w, int C) {
    int half = C / 2 > 1 ? C / 2 : 1;
    return w < half ? w : half;
}

int kvpolicy_obs_rows(const KVPolicy *p, int n) {
    int C = kvpolicy_budget(p, n);
    if (C >= n) return 0;
    switch (p->kind) {
    case KVP_H2O: return n;
    case KVP_SNAPKV:
    case KVP_PYRAMIDKV: return kvpolicy_window(p->window, C);
    case KVP_TOVA: return 1;
    default: return 0;
    }
}

int kvpolicy_pyramid_budget(int n, int C, int w, double beta, int layer, int n_layers) {
    CHECK(w >= 1 && w <= C && C < n && beta >= 1.0 && layer >= 0 && layer < n_layers, "kvpolicy_pyramid_budget");
    double A = (double)(C - w), lo = A / beta, hi = 2.0 * A - lo;
    if (hi > (double)(n - w) || n_layers == 1) return C;
    return w + (int)floor(hi - (hi - lo) * (double)layer / (double)(n_layers - 1) + 0.5);
}

int kvpolicy_pyramid_budget_ref(int n, int C, int w, double beta, int layer, int n_layers) {
    // Layer budgets as a linspace from hi (layer 0) down to lo (layer L-1).
    double A = C - w;
    double lo = A / beta;
    double hi = A * 2 - lo;
    if (n_layers == 1) return C;
    if (!(hi <= n - w)) return C; // the uniform fallback
    double share = hi - (hi - lo) * layer / (n_layers - 1);
    return w + (int)lround(share);
}

// ---------------------------------------------------------------------------
// Selections

typedef struct {
    double s;
    int j;
} Scored;

// Higher score first; ties: the earlier token.
static int scored_cmp(const void *a, const void *b) {
    const Scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

// keep[j] = 1 for the top c of s[0..m) (sorted once).
static void top_c(uint8_t *keep, const double *s, int m, int c) {
    if (c <= 0) return;
    Scored *v = xmalloc((size_t)m * sizeof(Scored));
    for (int j = 0; j < m; j++) v[j] = (Scored){s[j], j};
    qsort(v, (size_t)m, sizeof(Scored), scored_cmp);
    for (int i = 0; i < c && i < m; i++) keep[v[i].j] = 1;
    free(v);
}

// The reference: c passes of arg-max over what is not kept yet (the first of equals wins).
static void top_c_ref(uint8_t *keep, const double *s, int m, int c) {
    for (int t = 0; t < c; t++) {
        int best = -1;
        for (int j = 0; j < m; j++)
            if (!keep[j] && (best < 0 || s[j] > s[best])) best = j;
        if (best >= 0) keep[best] = 1;
    }
}

static void check_sel(int n, int C) {
    CHECK(n >= 1 && C >= 1 && C <= n, "kv selection: C %d of n %d", C, n);
}

void kvsel_streaming(uint8_t *keep, int n, int C, int sink) {
    check_sel(n, C);
    int s = sink < C ? sink : C;
    memset(keep, 0, (size_t)n);
    memset(keep, 1, (size_t)s);
    memset(keep + n - (C - s), 1, (size_t)(C - s));
}

void kvsel_streaming_ref(uint8_t *keep, int n, int C, int sink) {
    check_sel(n, C);
    int s = sink < C ? sink : C;
    for (int j = 0; j < n; j++) keep[j] = j < s || j >= n - (C - s);
}

void kvsel_h2o(uint8_t *keep, const double *acc, int hq, int n, int C, int recent) {
    check_sel(n, C);
    int r = recent < C ? recent : C, m = n - r;
    double *s = xcalloc((size_t)(m > 0 ? m : 1), sizeof(double));
    for (int h = 0; h < hq; h++)
        for (int j = 0; j < m; j++) s[j] += acc[(size_t)h * n + j] / (double)(n - j);
    for (int j = 0; j < m; j++) s[j] /= hq;
    memset(keep, 0, (size_t)n);
    memset(keep + m, 1, (size_t)r);
    top_c(keep, s, m, C - r);
    free(s);
}

void kvsel_h2o_ref(uint8_t *keep, const double *acc, int hq, int n, int C, int recent) {
    check_sel(n, C);
    int r = recent < C ? recent : C;
    double *s = xmalloc((size_t)n * sizeof(double));
    for (int j = 0; j < n; j++) {
        double sum = 0.0;
        for (int h = 0; h < hq; h++) {
            int seen_by = 0; // queries i >= j see key j
            for (int i = j; i < n; i++) seen_by++;
            sum += acc[(size_t)h * n + j] / seen_by;
        }
        s[j] = sum / hq;
        keep[j] = j >= n - r;
    }
    top_c_ref(keep, s, n - r, C - r);
    free(s);
}

// Pooled SnapKV scores s [m] of the keys before the window, mean over the heads.
static void snap_scores(double *s, const double *acc, int hq, int n, int m, int kernel, KVPool pool) {
    const int half = kernel / 2;
    for (int j = 0; j < m; j++) s[j] = 0.0;
    for (int h = 0; h < hq; h++) {
        const double *a = acc + (size_t)h * n;
        for (int j = 0; j < m; j++) {
            int lo = j - half > 0 ? j - half : 0, hi = j + half < m - 1 ? j + half : m - 1;
            double v = pool == KVP_POOL_MAX ? a[lo] : 0.0;
            for (int t = lo; t <= hi; t++) v = pool == KVP_POOL_MAX ? (a[t] > v ? a[t] : v) : v + a[t];
            s[j] += pool == KVP_POOL_MAX ? v : v / kernel;
        }
    }
    for (int j = 0; j < m; j++) s[j] /= hq;
}

void kvsel_snapkv(uint8_t *keep, const double *acc, int hq, int n, int C, int w, int kernel, KVPool pool) {
    check_sel(n, C);
    CHECK(w >= 1 && w <= C && C <= n && kernel % 2 == 1, "kvsel_snapkv: w %d, C %d, n %d, kernel %d", w, C, n, kernel);
    const int m = n - w;
    double *s = xmalloc((size_t)m * sizeof(double));
    snap_scores(s, acc, hq, n, m, kernel, pool);
    memset(keep, 0, (size_t)n);
    memset(keep + m, 1, (size_t)w);
    top_c(keep, s, m, C - w);
    free(s);
}

void kvsel_snapkv_ref(uint8_t *keep, const double *acc, int hq, int n, int C, int w, int kernel, KVPool pool) {
    check_sel(n, C);
    CHECK(w >= 1 && w <= C && C <= n && kernel % 2 == 1, "kvsel_snapkv_ref: bad arguments");
    const int m = n - w, pad = kernel / 2;
    // Explicit padding: zeros for avg (counted in the mean), -inf for max.
    double *padded = xmalloc((size_t)(m + 2 * pad) * sizeof(double));
    double *s = xcalloc((size_t)n, sizeof(double));
    for (int h = 0; h < hq; h++) {
        for (int t = 0; t < m + 2 * pad; t++) {
            int j = t - pad;
            padded[t] = j >= 0 && j < m ? acc[(size_t)h * n + j] : pool == KVP_POOL_MAX ? -INFINITY : 0.0;
        }
        for (int j = 0; j < m; j++) {
            double v = pool == KVP_POOL_MAX ? -INFINITY : 0.0;
            for (int t = j; t < j + kernel; t++) {
                if (pool == KVP_POOL_MAX) v = padded[t] > v ? padded[t] : v;
                else v += padded[t];
            }
            s[j] += pool == KVP_POOL_MAX ? v : v / kernel;
        }
    }
    for (int j = 0; j < n; j++) {
        s[j] /= hq;
        keep[j] = j >= m;
    }
    top_c_ref(keep, s, m, C - w);
    free(padded);
    free(s);
}

void kvsel_tova(uint8_t *keep, const double *acc, int H, int n, int C) {
    check_sel(n, C);
    double *s = xcalloc((size_t)n, sizeof(double));
    for (int h = 0; h < H; h++)
        for (int j = 0; j < n; j++) s[j] += acc[(size_t)h * n + j];
    for (int j = 0; j < n; j++) s[j] /= H;
    memset(keep, 0, (size_t)n);
    top_c(keep, s, n, C);
    free(s);
}

void kvsel_tova_ref(uint8_t *keep, const double *acc, int H, int n, int C) {
    check_sel(n, C);
    double *s = xmalloc((size_t)n * sizeof(double));
    for (int j = 0; j < n; j++) {
        double sum = 0.0;
        for (int h = 0; h < H; h++) sum += acc[(size_t)h * n + j];
        s[j] = sum / H;
        keep[j] = 0;
    }
    top_c_ref(keep, s, n, C);
    free(s);
}

void kvsel_knorm(uint8_t *keep, const float *k, int n, int E, int C) {
    check_sel(n, C);
    double *s = xmalloc((size_t)n * sizeof(double));
    for (int j = 0; j < n; j++) {
        double ss = 0.0;
        for (int i = 0; i < E; i++) ss += (double)k[(size_t)j * E + i] * k[(size_t)j * E + i];
        s[j] = -ss; // smallest norm = highest score
    }
    memset(keep, 0, (size_t)n);
    top_c(keep, s, n, C);
    free(s);
}

void kvsel_knorm_ref(uint8_t *keep, const float *k, int n, int E, int C) {
    check_sel(n, C);
    double *norm = xmalloc((size_t)n * sizeof(double));
    for (int j = 0; j < n; j++) {
        double ss = 0.0;
        for (int i = 0; i < E; i++) ss += (double)k[(size_t)j * E + i] * (double)k[(size_t)j * E + i];
        norm[j] = ss; // squared: same order as the norm
        keep[j] = 0;
    }
    for (int t = 0; t < C; t++) { // arg-min of what is left
        int best = -1;
        for (int j = 0; j < n; j++)
            if (!keep[j] && (best < 0 || norm[j] < norm[best])) best = j;
        keep[best] = 1;
    }
    free(norm);
}

void kvsel_random(uint8_t *keep, int n, int C, uint64_t seed) {
    check_sel(n, C);
    double *s = xmalloc((size_t)n * sizeof(double));
    Rng r;
    rng_seed(&r, seed);
    for (int j = 0; j < n; j++) s[j] = -(double)rng_uniform(&r); // smallest draw = highest score
    memset(keep, 0, (size_t)n);
    top_c(keep, s, n, C);
    free(s);
}

void kvsel_random_ref(uint8_t *keep, int n, int C, uint64_t seed) {
    check_sel(n, C);
    float *u = xmalloc((size_t)n * sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (int j = 0; j < n; j++) {
        u[j] = rng_uniform(&r);
        keep[j] = 0;
    }
    for (int t = 0; t < C; t++) {
        int best = -1;
        for (int j = 0; j < n; j++)
            if (!keep[j] && (best < 0 || u[j] < u[best])) best = j;
        keep[best] = 1;
    }
    free(u);
}

// ---------------------------------------------------------------------------
// Prefill: observer and compression

int kvpolicy_needs_attention(const KVPolicy *p, int n_seqs, const int *n) {
    for (int b = 0; p && b < n_seqs; b++)
        if (kvpolicy_obs_rows(p, n[b]) > 0) return 1;
    return 0;
}

void kvobs_init(KVObserver *o, const KVPolicy *p, int n_seqs, const int *n, int n_layers, int n_heads) {
    memset(o, 0, sizeof *o);
    o->p = p;
    o->n_seqs = n_seqs;
    o->n_layers = n_layers;
    o->n_heads = n_heads;
    o->n = xmalloc((size_t)n_seqs * sizeof(int));
    o->first_row = xmalloc((size_t)n_seqs * sizeof(int));
    o->at = xmalloc((size_t)n_seqs * sizeof(size_t));
    size_t total = 0;
    for (int b = 0; b < n_seqs; b++) {
        o->n[b] = n[b];
        o->first_row[b] = n[b] - kvpolicy_obs_rows(p, n[b]);
        o->at[b] = total;
        total += (size_t)n_layers * (size_t)n_heads * (size_t)n[b];
    }
    o->acc = xcalloc(total ? total : 1, sizeof(double));
}

void kvobs_free(KVObserver *o) {
    free(o->n);
    free(o->first_row);
    free(o->at);
    free(o->acc);
    memset(o, 0, sizeof *o);
}

void kvobs_hook(void *ctx, int layer, int seq, int head, int n_q, const int32_t *q_tok, int n_k,
                const int32_t *k_tok, const float *probs) {
    KVObserver *o = ctx;
    const int n = o->n[seq];
    double *dst = o->acc + o->at[seq] + ((size_t)layer * (size_t)o->n_heads + (size_t)head) * (size_t)n;
    for (int j = 0; j < n_k; j++)
        CHECK(k_tok[j] >= 0 && k_tok[j] < n, "kvobs_hook: key token %d outside the prompt of %d", k_tok[j], n);
    for (int i = 0; i < n_q; i++) {
        if (q_tok[i] < o->first_row[seq]) continue;
        const float *row = probs + (size_t)i * (size_t)n_k;
        for (int j = 0; j < n_k; j++) dst[k_tok[j]] += row[j];
    }
}

// keep [n] for layer l, KV head g, C kept (acc: the sequence's [L, H, n] block).
static void select_one(uint8_t *keep, const KVPolicy *p, const KVCache *c, const double *acc, int n, int n_heads,
                       int l, int g, int C, int C_uniform) {
    const int hpg = n_heads / c->n_kv_heads;
    const double *layer_acc = acc ? acc + (size_t)l * (size_t)n_heads * (size_t)n : NULL;
    const double *group_acc = acc ? layer_acc + (size_t)g * (size_t)hpg * (size_t)n : NULL;
    switch (p->kind) {
    case KVP_STREAMING: kvsel_streaming(keep, n, C, p->sink); break;
    case KVP_H2O: kvsel_h2o(keep, group_acc, hpg, n, C, p->recent >= 0 ? p->recent : C / 2); break;
    case KVP_SNAPKV:
    case KVP_PYRAMIDKV:
        kvsel_snapkv(keep, group_acc, hpg, n, C, kvpolicy_window(p->window, C_uniform), p->kernel, p->pool);
        break;
    case KVP_TOVA: kvsel_tova(keep, layer_acc, n_heads, n, C); break;
    case KVP_KNORM: kvsel_knorm(keep, kvcache_k(c, l, g), n, c->head_dim, C); break;
    case KVP_RANDOM: {
        uint64_t s = p->seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)l << 40) ^ ((uint64_t)g << 20) ^ (uint64_t)n;
        kvsel_random(keep, n, C, s);
        break;
    }
    default: DIE("kvpolicy: no selection for policy %d", (int)p->kind);
    }
}

void kvpolicy_compress(KVCache *c, const KVPolicy *p, const double *acc, int n, int n_heads) {
    const int L = c->n_layers, G = c->n_kv_heads;
    const size_t E = (size_t)c->head_dim;
    if (!p || p->kind == KVP_NONE) return;
    const int C = kvpolicy_budget(p, n);
    if (C >= n) return;
    CHECK(c->parent == NULL && n_heads % G == 0, "kvpolicy_compress: a prompt cache without parent");
    int *cap = xmalloc((size_t)L * sizeof(int));
    uint8_t *keep = xmalloc((size_t)L * (size_t)G * (size_t)n);
    for (int l = 0; l < L; l++) {
        cap[l] = p->kind == KVP_PYRAMIDKV
                     ? kvpolicy_pyramid_budget(n, C, kvpolicy_window(p->window, C), p->beta, l, L) : C;
        for (int g = 0; g < G; g++) {
            CHECK(c->len[l * G + g] == n, "kvpolicy_compress: layer %d head %d holds %d entries, not the prompt's %d",
                  l, g, c->len[l * G + g], n);
            select_one(keep + ((size_t)l * G + g) * (size_t)n, p, c, acc, n, n_heads, l, g, cap[l], C);
        }
    }
    KVCache kept;
    kvcache_init(&kept, L, G, c->head_dim, cap);
    for (int l = 0; l < L; l++)
        for (int g = 0; g < G; g++) {
            const uint8_t *kp = keep + ((size_t)l * G + g) * (size_t)n;
            int at = 0;
            for (int j = 0; j < n; j++) {
                if (!kp[j]) continue;
                memcpy(kvcache_k(&kept, l, g) + (size_t)at * E, kvcache_k(c, l, g) + (size_t)j * E, E * sizeof(float));
                memcpy(kvcache_v(&kept, l, g) + (size_t)at * E, kvcache_v(c, l, g) + (size_t)j * E, E * sizeof(float));
                kvcache_tok(&kept, l, g)[at++] = kvcache_tok(c, l, g)[j];
            }
            CHECK(at == cap[l], "kvpolicy_compress: layer %d head %d kept %d, not %d", l, g, at, cap[l]);
            kept.len[l * G + g] = at;
        }
    kept.n_seen = c->n_seen;
    kvcache_free(c);
    *c = kept;
    free(cap);
    free(keep);
}

// ---------------------------------------------------------------------------
// StreamingLLM re-rotation

// The common length of every layer and head (streaming keeps C everywhere).
static int rerotate_len(const KVCache *c) {
    CHECK(c->parent == NULL && c->head_dim % 2 == 0, "kvpolicy_rerotate: a prompt cache without parent");
    const int C = c->len[0];
    for (int i = 0; i < c->n_layers * c->n_kv_heads; i++)
        CHECK(c->len[i] == C, "kvpolicy_rerotate: entry lists of %d and %d (re-rotation needs one kept count)",
              c->len[i], C);
    return C;
}

void kvpolicy_rerotate(KVCache *c, const float *inv_freq) {
    const int C = rerotate_len(c), half = c->head_dim / 2;
    for (int l = 0; l < c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) {
            float *k = kvcache_k(c, l, g);
            int32_t *tok = kvcache_tok(c, l, g);
            for (int j = 0; j < C; j++) {
                float *v = k + (size_t)j * (size_t)c->head_dim;
                const float p_old = (float)tok[j], p_new = (float)j;
                for (int i = 0; tok[j] != j && i < half; i++) {
                    const float a_old = p_old * inv_freq[i], a_new = p_new * inv_freq[i]; // as rope_forward
                    const double d = (double)a_new - (double)a_old, cs = cos(d), sn = sin(d);
                    const double x = v[i], y = v[i + half];
                    v[i] = (float)(x * cs - y * sn);
                    v[i + half] = (float)(y * cs + x * sn);
                }
                tok[j] = j;
            }
        }
    c->n_seen = C;
}

void kvpolicy_rerotate_ref(KVCache *c, const float *inv_freq) {
    const int C = rerotate_len(c), E = c->head_dim;
    for (int l = 0; l < c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++)
            for (int j = 0; j < C; j++) {
                float *v = kvcache_k(c, l, g) + (size_t)j * (size_t)E;
                int old = kvcache_tok(c, l, g)[j], now = j;
                rope_backward(v, &old, inv_freq, 1, 1, (size_t)E, (size_t)E); // undo at the original position
                rope_forward(v, &now, inv_freq, 1, 1, (size_t)E, (size_t)E);  // apply at the new one
                kvcache_tok(c, l, g)[j] = j;
            }
    c->n_seen = C;
}
