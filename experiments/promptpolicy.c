// promptpolicy.c: see promptpolicy.h.
#include "experiments/promptpolicy.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/beam.h"
#include "runtime/plan.h"

static const char *const PP_NAMES[PP_COUNT] = {"none", "truncate", "selective"};
static const char *const PP_KEYS[PP_COUNT] = {"(none)", "items", "ratio, lm"};

const char *promptpolicy_name(PromptPolicyKind kind) {
    CHECK(kind >= 0 && kind < PP_COUNT, "promptpolicy_name: kind %d", (int)kind);
    return PP_NAMES[kind];
}

void promptpolicy_default(PromptPolicy *p, PromptPolicyKind kind) {
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->items = 10;
    p->ratio = 0.35;
}

static int set_key(PromptPolicy *p, const char *key, const char *val, Error *e) {
    const char *name = PP_NAMES[p->kind];
    char *end;
    errno = 0;
    if (p->kind == PP_TRUNCATE && !strcmp(key, "items")) {
        long x = strtol(val, &end, 10);
        if (*end || errno || x < 1 || x > 1 << 30)
            return err_set(e, "%s: items '%s' is not an integer >= 1", name, val);
        p->items = (int)x;
    } else if (p->kind == PP_SELECTIVE && !strcmp(key, "ratio")) {
        double x = strtod(val, &end);
        if (*end || errno || !isfinite(x) || !(x >= 0.0 && x < 1.0))
            return err_set(e, "%s: ratio '%s' is not a number in [0, 1) (the fraction of history items removed)",
                           name, val);
        p->ratio = x;
    } else if (p->kind == PP_SELECTIVE && !strcmp(key, "lm")) {
        if (strlen(val) >= sizeof p->lm) return err_set(e, "%s: lm path longer than %zu", name, sizeof p->lm - 1);
        strcpy(p->lm, val);
    } else {
        return err_set(e, "%s: unknown key '%s' (keys: %s)", name, key, PP_KEYS[p->kind]);
    }
    return 0;
}

static int set_key_cb(void *ctx, const char *key, const char *val, Error *e) { return set_key(ctx, key, val, e); }

int promptpolicy_parse(PromptPolicy *p, const char *spec, Error *e) {
    char buf[2048];
    if (strlen(spec) >= sizeof buf) return err_set(e, "policy spec longer than %zu characters", sizeof buf - 1);
    strcpy(buf, spec);
    char *params = strchr(buf, ':');
    if (params) *params++ = '\0';
    int kind = -1;
    for (int k = 0; k < PP_COUNT; k++)
        if (!strcmp(buf, PP_NAMES[k])) kind = k;
    if (kind < 0) return err_set(e, "unknown prompt policy '%s' (known: none, truncate, selective)", buf);
    promptpolicy_default(p, (PromptPolicyKind)kind);
    if (!params) return 0;
    return spec_params_each(params, buf, spec, set_key_cb, p, e);
}

void promptpolicy_format(char *out, size_t n, const PromptPolicy *p) {
    switch (p->kind) {
    case PP_TRUNCATE: snprintf(out, n, "truncate:items=%d", p->items); break;
    case PP_SELECTIVE:
        snprintf(out, n, "selective:ratio=%.10g%s%s", p->ratio, *p->lm ? ",lm=" : "", p->lm);
        break;
    default: snprintf(out, n, "none"); break;
    }
}

int promptpolicy_n_drop(const PromptPolicy *p, int n) {
    switch (p->kind) {
    case PP_TRUNCATE: return n > p->items ? n - p->items : 0;
    case PP_SELECTIVE: return (int)floor(p->ratio * (double)n + 1e-9);
    default: return 0;
    }
}

// ---------------------------------------------------------------------------
// Selections

void ppsel_truncate(uint8_t *keep, int n, int items) {
    int k = items < n ? items : n;
    memset(keep, 0, (size_t)(n - k));
    memset(keep + (n - k), 1, (size_t)k);
}

void ppsel_truncate_ref(uint8_t *keep, int n, int items) {
    for (int j = 0; j < n; j++) keep[j] = n - j <= items; // the j-th item from the end is kept if within `items`
}

typedef struct {
    double s;
    int j;
} Scored;

// Lowest first; ties: the older item.
static int scored_cmp(const void *a, const void *b) {
    const Scored *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

void ppsel_selective(uint8_t *keep, const double *info, int n, int n_drop) {
    CHECK(n_drop >= 0 && n_drop <= n, "ppsel_selective: %d of %d", n_drop, n);
    Scored *v = xmalloc((size_t)(n ? n : 1) * sizeof(Scored));
    for (int j = 0; j < n; j++) v[j] = (Scored){info[j], j};
    qsort(v, (size_t)n, sizeof(Scored), scored_cmp);
    memset(keep, 1, (size_t)n);
    for (int i = 0; i < n_drop; i++) keep[v[i].j] = 0;
    free(v);
}

void ppsel_selective_ref(uint8_t *keep, const double *info, int n, int n_drop) {
    for (int j = 0; j < n; j++) keep[j] = 1;
    for (int t = 0; t < n_drop; t++) { // n_drop passes of arg-min over what is still kept (the first of equals)
        int worst = -1;
        for (int j = 0; j < n; j++)
            if (keep[j] && (worst < 0 || info[j] < info[worst])) worst = j;
        keep[worst] = 0;
    }
}

// ---------------------------------------------------------------------------
// Self-information

int pp_item_info(double *const *info, Model *lm, ForwardScratch *scratch, int n_seqs, const int *const *tokens,
                 const int *len, const int *const *at, const int *n_items, int item_len, Error *e) {
    const ModelConfig *c = &lm->config;
    if (c->method != METHOD_FINETUNE)
        return err_set(e, "the scoring LM must be a full (finetune) model, not %s (its prompt tokens "
                       "do not reach the last layer)", config_method_name(c->method));
    size_t T = 0;
    for (int b = 0; b < n_seqs; b++) T += (size_t)len[b];
    int *flat = xmalloc((T ? T : 1) * sizeof(int));
    KVCache *caches = xcalloc((size_t)n_seqs, sizeof(KVCache));
    KVCache **pc = xmalloc((size_t)n_seqs * sizeof(KVCache *));
    int *cap = xmalloc((size_t)c->n_layers * sizeof(int));
    for (int b = 0, o = 0; b < n_seqs; o += len[b], b++) {
        memcpy(flat + o, tokens[b], (size_t)len[b] * sizeof(int));
        for (int l = 0; l < c->n_layers; l++) cap[l] = len[b];
        kvcache_init(&caches[b], c->n_layers, c->n_kv_heads, c->head_dim, cap);
        pc[b] = &caches[b];
    }
    const size_t V = (size_t)c->vocab_size;
    float *logits = xmalloc((T ? T : 1) * V * sizeof(float));
    ForwardBatch fb = {.n_seqs = n_seqs, .n_new = len, .tokens = flat, .caches = pc, .logits_mode = LOGITS_ALL};
    int rc = model_forward(logits, lm, &fb, scratch, e);
    for (size_t b = 0, o = 0; !rc && b < (size_t)n_seqs; o += (size_t)len[b], b++)
        for (int j = 0; j < n_items[b]; j++) {
            double s = 0.0;
            for (int t = at[b][j]; t < at[b][j] + item_len; t++) {
                CHECK(t >= 0 && t < len[b], "pp_item_info: item %d of sequence %zu at token %d of %d", j, b, t, len[b]);
                if (t == 0) continue;
                const float *row = logits + (o + (size_t)t - 1) * V;
                s += beam_row_logz(row, V) - (double)row[tokens[b][t]];
            }
            info[b][j] = s;
        }
    for (int b = 0; b < n_seqs; b++) kvcache_free(&caches[b]);
    free(flat); free(caches); free(pc); free(cap); free(logits);
    return rc ? err_prefix(e, "scoring LM: ") : 0;
}

// The items' first code tokens in a prompt built by p: history-kind tokens
// other than the separator, code_levels at a time. Returns the count.
static int item_starts(int *at, const int *tokens, const uint8_t *kinds, int n, const Prompter *p) {
    int k = 0, in_item = 0;
    for (int t = 0; t < n; t++) {
        if (kinds[t] != TOKEN_KIND_HISTORY || tokens[t] == p->comma) continue;
        if (in_item == 0) at[k++] = t;
        in_item = (in_item + 1) % p->code_levels;
    }
    return k;
}

// info[b][j] of every history under the scorer's LM and prompts.
static int score_histories(double *const *info, PromptScorer *s, int n_seqs, const int *const *hist,
                           const int *n_hist, Error *e) {
    int **tok = xcalloc((size_t)n_seqs, sizeof(int *)), **at = xcalloc((size_t)n_seqs, sizeof(int *));
    int *len = xmalloc((size_t)n_seqs * sizeof(int)), *n_items = xmalloc((size_t)n_seqs * sizeof(int));
    for (int b = 0; b < n_seqs; b++) {
        int n = prompter_length(s->prompter, n_hist[b], 0);
        uint8_t *kinds = xmalloc((size_t)n);
        tok[b] = xmalloc((size_t)n * sizeof(int));
        at[b] = xmalloc((size_t)(n_hist[b] ? n_hist[b] : 1) * sizeof(int));
        len[b] = prompter_build(tok[b], kinds, s->prompter, hist[b], n_hist[b], 0);
        n_items[b] = item_starts(at[b], tok[b], kinds, len[b], s->prompter);
        CHECK(n_items[b] == n_hist[b], "score_histories: %d items found in a prompt of %d", n_items[b], n_hist[b]);
        free(kinds);
    }
    int rc = pp_item_info(info, s->lm, &s->scratch, n_seqs, (const int *const *)tok, len, (const int *const *)at,
                          n_items, s->prompter->code_levels, e);
    for (int b = 0; b < n_seqs; b++) {
        free(tok[b]);
        free(at[b]);
    }
    free(tok); free(at); free(len); free(n_items);
    return rc;
}

int promptpolicy_apply(int *const *kept, int *n_kept, const PromptPolicy *p, PromptScorer *scorer, int n_seqs,
                       const int *const *hist, const int *n_hist, Error *e) {
    double **info = NULL;
    if (p->kind == PP_SELECTIVE) {
        CHECK(scorer && scorer->lm && scorer->prompter, "promptpolicy_apply: selective without a scorer");
        info = xcalloc((size_t)n_seqs, sizeof(double *));
        for (int b = 0; b < n_seqs; b++) info[b] = xmalloc((size_t)(n_hist[b] ? n_hist[b] : 1) * sizeof(double));
        if (score_histories(info, scorer, n_seqs, hist, n_hist, e)) {
            for (int b = 0; b < n_seqs; b++) free(info[b]);
            free(info);
            return -1;
        }
    }
    for (int b = 0; b < n_seqs; b++) {
        const int n = n_hist[b];
        uint8_t *keep = xmalloc((size_t)(n ? n : 1));
        if (p->kind == PP_TRUNCATE) ppsel_truncate(keep, n, p->items);
        else if (p->kind == PP_SELECTIVE) ppsel_selective(keep, info[b], n, promptpolicy_n_drop(p, n));
        else memset(keep, 1, (size_t)n);
        n_kept[b] = 0;
        for (int j = 0; j < n; j++)
            if (keep[j]) kept[b][n_kept[b]++] = hist[b][j];
        free(keep);
        if (info) free(info[b]);
    }
    free(info);
    return 0;
}
