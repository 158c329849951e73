// bench_policy.c: see bench_policy.h.
#include "experiments/bench_policy.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/checkpoint.h"

// The learned baselines' keys: skiplayers keep=M, gist tokens=G, anllm items=N, pod regs=P,words=X,
// compress500x tokens=C,rank=R.
typedef struct {
    const char *name, *keys; // keys: for the message
    ModelMethod method;
} LearnedShape;
static const LearnedShape LEARNED[] = {
    {"skiplayers", "keep", METHOD_SKIPLAYERS},
    {"gist", "tokens", METHOD_GIST},
    {"anllm", "items", METHOD_ANLLM},
    {"pod", "regs, words", METHOD_POD},
    {"compress500x", "tokens, rank", METHOD_COMPRESS500X},
};
#define N_LEARNED ((int)(sizeof LEARNED / sizeof LEARNED[0]))

static const LearnedShape *learned_of(const char *name) {
    for (int i = 0; i < N_LEARNED; i++)
        if (!strcmp(LEARNED[i].name, name)) return &LEARNED[i];
    return NULL;
}

static int learned_set(void *ctx, const char *key, const char *val, Error *e) {
    BenchMethod *m = ctx;
    const LearnedShape *ls = learned_of(m->name);
    int *slot = NULL, lo = 1;
    if (ls->method == METHOD_SKIPLAYERS && !strcmp(key, "keep")) slot = &m->keep_layers;
    else if (ls->method == METHOD_GIST && !strcmp(key, "tokens")) slot = &m->gist_tokens;
    else if (ls->method == METHOD_ANLLM && !strcmp(key, "items")) slot = &m->anllm_items;
    else if (ls->method == METHOD_POD && !strcmp(key, "regs")) slot = &m->pod_regs;
    else if (ls->method == METHOD_POD && !strcmp(key, "words")) { slot = &m->pod_words; lo = 0; }
    else if (ls->method == METHOD_COMPRESS500X && !strcmp(key, "tokens")) slot = &m->c500x_tokens;
    else if (ls->method == METHOD_COMPRESS500X && !strcmp(key, "rank")) slot = &m->lora_rank;
    if (!slot) return err_set(e, "%s: unknown key '%s' in '%s' (its keys: %s)", m->name, key, m->spec, ls->keys);
    char *end;
    long x = strtol(val, &end, 10);
    if (end == val || *end || x < lo || x > 4096)
        return err_set(e, "%s: %s must be an integer in %d..4096, found '%s'", m->name, key, lo, val);
    *slot = (int)x;
    return 0;
}

// A learned baseline's shape on the benched weights, e.g. gist:tokens=3. The
// spec column: the entry with every value (defaults filled in where fixed).
static int parse_learned(BenchMethod *m, const LearnedShape *ls, const char *spec, Error *e) {
    m->method = ls->method;
    snprintf(m->name, sizeof m->name, "%s", ls->name);
    snprintf(m->spec, sizeof m->spec, "%s", spec); // for messages while parsing
    m->gist_tokens = m->pod_regs = m->c500x_tokens = 1;
    m->lora_rank = 8;
    m->pod_words = -1; // the LC-Rec template's instruction words (bench_policy.h)
    const char *colon = strchr(spec, ':');
    if (colon) {
        char *params = xmalloc(strlen(colon));
        memcpy(params, colon + 1, strlen(colon));
        int rc = spec_params_each(params, ls->name, spec, learned_set, m, e);
        free(params);
        if (rc) return -1;
    }
    m->spec[0] = '\0';
    if (ls->method == METHOD_SKIPLAYERS && m->keep_layers)
        snprintf(m->spec, sizeof m->spec, "skiplayers:keep=%d", m->keep_layers);
    if (ls->method == METHOD_GIST) snprintf(m->spec, sizeof m->spec, "gist:tokens=%d", m->gist_tokens);
    if (ls->method == METHOD_COMPRESS500X)
        snprintf(m->spec, sizeof m->spec, "compress500x:tokens=%d,rank=%d", m->c500x_tokens, m->lora_rank);
    if (ls->method == METHOD_ANLLM && m->anllm_items)
        snprintf(m->spec, sizeof m->spec, "anllm:items=%d", m->anllm_items);
    if (ls->method == METHOD_POD)
        snprintf(m->spec, sizeof m->spec, m->pod_words >= 0 ? "pod:regs=%d,words=%d" : "pod:regs=%d", m->pod_regs,
                 m->pod_words);
    return 0;
}

// One entry: "full", "earn", a learned baseline, or a KV or prompt policy's spec.
static int parse_one(BenchMethod *m, const char *spec, Error *e) {
    memset(m, 0, sizeof *m);
    m->method = METHOD_FINETUNE;
    if (!strcmp(spec, "full") || !strcmp(spec, "earn")) {
        m->method = strcmp(spec, "earn") ? METHOD_FINETUNE : METHOD_EARN;
        snprintf(m->name, sizeof m->name, "%s", spec);
        return 0;
    }
    char name[32];
    size_t n = strcspn(spec, ":");
    snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name - 1 ? n : sizeof name - 1), spec);
    if (learned_of(name)) return parse_learned(m, learned_of(name), spec, e);
    int is_kv = 0, is_pp = 0;
    for (int k = 1; k < KVP_COUNT; k++) is_kv |= !strcmp(name, kvpolicy_name((KVPolicyKind)k));
    for (int k = 1; k < PP_COUNT; k++) is_pp |= !strcmp(name, promptpolicy_name((PromptPolicyKind)k));
    if (!is_kv && !is_pp)
        return err_set(e, "unknown method or policy '%s' (methods: full, earn, skiplayers, gist, anllm, pod, "
                       "compress500x; KV "
                       "policies: streaming, h2o, snapkv, pyramidkv, tova, knorm, random; prompt policies: truncate, "
                       "selective)", name);
    snprintf(m->name, sizeof m->name, "%s", name);
    if (is_kv) {
        m->has_kv = 1;
        if (kvpolicy_parse(&m->kv, spec, e)) return -1;
        kvpolicy_format(m->spec, sizeof m->spec, &m->kv);
    } else {
        m->has_prompt = 1;
        if (promptpolicy_parse(&m->pp, spec, e)) return -1;
        promptpolicy_format(m->spec, sizeof m->spec, &m->pp);
    }
    return 0;
}

int bench_methods_parse(BenchMethod *out, const char *list, Error *e) {
    size_t L = strlen(list);
    if (!L) return err_set(e, "empty");
    if (list[0] == ',' || list[L - 1] == ',' || strstr(list, ",,")) return err_set(e, "an empty field in '%s'", list);
    char *buf = xmalloc(L + 1), *spec = xmalloc(L + 1);
    memcpy(buf, list, L + 1);
    int n = 0, rc = 0;
    spec[0] = '\0';
    // Fields with '=' and no ':' continue the previous spec; each spec is parsed when the next one starts.
    for (char *save = NULL, *f = strtok_r(buf, ",", &save); !rc; f = strtok_r(NULL, ",", &save)) {
        if (f && strchr(f, '=') && !strchr(f, ':')) {
            if (!strchr(spec, ':')) rc = err_set(e, "'%s' follows no policy's key=value list (NAME:key=value,...)", f);
            else strcat(strcat(spec, ","), f);
            continue;
        }
        if (spec[0]) {
            if (n == BENCH_MAX_METHODS) rc = err_set(e, "more than %d methods", BENCH_MAX_METHODS);
            else rc = parse_one(&out[n++], spec, e);
        }
        if (!f) break;
        strcpy(spec, f);
    }
    free(buf);
    free(spec);
    return rc ? -1 : n;
}

int bench_methods_load(BenchMethod *m, int n, Error *e) {
    for (int i = 0; i < n; i++) {
        if (!m[i].has_prompt || m[i].pp.kind != PP_SELECTIVE || !m[i].pp.lm[0]) continue;
        if (model_load(&m[i].lm, m[i].pp.lm, e)) return err_prefix(e, "%s: lm: ", m[i].name);
        m[i].have_lm = 1;
        m[i].lm.allow_long = 1; // random ids of a timed length
        if (m[i].lm.config.method != METHOD_FINETUNE)
            return err_set(e, "%s: lm %s is an %s model; the scoring LM must be a full (finetune) model", m[i].name,
                           m[i].pp.lm, config_method_name(m[i].lm.config.method));
    }
    return 0;
}

void bench_methods_free(BenchMethod *m, int n) {
    for (int i = 0; i < n; i++)
        if (m[i].have_lm) model_free(&m[i].lm);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// One selection over the B prompts: kept [B, len] flags per token.
static int select_tokens(uint8_t *kept, int *const *prompts, int B, int len, int G, const BenchMethod *m,
                         Model *lm, Error *e) {
    const int n_items = len / G, lead = len - n_items * G;
    const int V = lm->config.vocab_size;
    double **info = xcalloc((size_t)B, sizeof(double *));
    int **tok = xcalloc((size_t)B, sizeof(int *)), **at = xcalloc((size_t)B, sizeof(int *));
    int *lens = xmalloc((size_t)B * sizeof(int)), *ni = xmalloc((size_t)B * sizeof(int));
    int rc = 0;
    for (int b = 0; b < B; b++) {
        info[b] = xmalloc((size_t)(n_items ? n_items : 1) * sizeof(double));
        tok[b] = xmalloc((size_t)len * sizeof(int));
        at[b] = xmalloc((size_t)(n_items ? n_items : 1) * sizeof(int));
        for (int t = 0; t < len; t++) tok[b][t] = prompts[b][t] % V;
        for (int j = 0; j < n_items; j++) at[b][j] = lead + j * G;
        lens[b] = len;
        ni[b] = n_items;
    }
    if (m->pp.kind == PP_SELECTIVE) {
        ForwardScratch sc = {0};
        rc = pp_item_info(info, lm, &sc, B, (const int *const *)tok, lens, (const int *const *)at, ni, G, e);
        forward_scratch_free(&sc);
    }
    uint8_t *keep = xmalloc((size_t)(n_items ? n_items : 1));
    for (int b = 0; !rc && b < B; b++) {
        if (m->pp.kind == PP_SELECTIVE) ppsel_selective(keep, info[b], n_items, promptpolicy_n_drop(&m->pp, n_items));
        else ppsel_truncate(keep, n_items, m->pp.items);
        uint8_t *k = kept + (size_t)b * (size_t)len;
        memset(k, 1, (size_t)lead);
        for (int j = 0; j < n_items; j++) memset(k + lead + j * G, keep[j], (size_t)G);
    }
    for (int b = 0; b < B; b++) {
        free(info[b]);
        free(tok[b]);
        free(at[b]);
    }
    free(info); free(tok); free(at); free(lens); free(ni); free(keep);
    return rc;
}

int bench_prompt_policy(int **prompts, int *lens, int B, int len, int G, const BenchMethod *m, Model *target,
                        int reps, double *ms, Error *e) {
    Model *lm = m->have_lm ? (Model *)&m->lm : target;
    uint8_t *kept = xmalloc((size_t)B * (size_t)len);
    double t[33];
    int rc = 0;
    for (int r = -1; r < reps && !rc; r++) {
        double t0 = time_now_s();
        rc = select_tokens(kept, prompts, B, len, G, m, lm, e);
        if (r >= 0) t[r] = 1e3 * (time_now_s() - t0);
    }
    if (!rc) {
        qsort(t, (size_t)reps, sizeof(double), cmp_double);
        *ms = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
        for (int b = 0; b < B; b++) {
            int n = 0;
            for (int i = 0; i < len; i++)
                if (kept[(size_t)b * (size_t)len + i]) prompts[b][n++] = prompts[b][i];
            lens[b] = n;
        }
    }
    free(kept);
    return rc ? err_prefix(e, "%s: ", m->name) : 0;
}
