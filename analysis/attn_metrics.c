// attn_metrics.c: attention-pattern metrics; definitions in attn_metrics.h.
#include "analysis/attn_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *METRIC_NAMES[ATTN_METRIC_COUNT] = {
    "density_eps", "sink_head", "sink_tail", "entropy", "entropy_norm", "topk_mass", "first_mass",
    "mass_special", "mass_prefix_reg", "mass_instruction", "mass_history", "mass_suffix_reg",
    "mass_target", "n_keys", "density_rel", "keys_eps",
};

const char *attn_metric_name(int metric) {
    return metric >= 0 && metric < ATTN_METRIC_COUNT ? METRIC_NAMES[metric] : "?";
}

const char *attn_rows_name(int rows) {
    return rows == ATTN_ROWS_DECISION ? "decision" : rows == ATTN_ROWS_ALL ? "all" : "?";
}

void attn_metric_opts_default(AttnMetricOpts *o) {
    o->eps = 0.05;
    o->head = 3;
    o->tail = 3;
    o->topk = 5;
    o->sum_tol = ATTN_SUM_TOL_DEFAULT;
    o->eps_rel = 1.0;
}

double attn_density_rel_ref(const float *p, int n, double c) {
    float thr = (float)(c / (double)n);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (p[i] > thr) k++;
    return (double)k / (double)n;
}

int attn_prompt_len(const uint8_t *kinds, int T) { return attn_decision_row(kinds, T) + 1; }

int attn_head_check(const float *A, const uint8_t *row_mask, const uint8_t *key_mask, int T, double sum_tol,
                    char *why, size_t n) {
    for (int q = 0; q < T; q++) {
        if (!row_mask[q]) continue;
        const float *row = A + (size_t)q * (size_t)T;
        double sum = 0;
        int n_keys = 0;
        for (int k = 0; k <= q; k++) {
            if (!key_mask[k]) continue;
            float v = row[k];
            if (!isfinite(v)) {
                snprintf(why, n, "entry at key %d is %g, not a finite number", k, (double)v);
                return q;
            }
            if (v < 0) {
                snprintf(why, n, "entry at key %d is %g, negative", k, (double)v);
                return q;
            }
            sum += v;
            n_keys++;
        }
        if (n_keys > 0 && !(fabs(sum - 1.0) <= sum_tol)) {
            snprintf(why, n, "its %d visible entries sum to %.9g, not 1 (tolerance %g)", n_keys, sum, sum_tol);
            return q;
        }
    }
    return -1;
}

// Sum of the k largest values of p [n]: keeps a small sorted list (k is a
// handful, so O(n k) beats sorting the row).
static double topk_sum(const float *p, int n, int k) {
    if (k <= 0) return 0.0;
    if (k >= n) {
        double s = 0;
        for (int i = 0; i < n; i++) s += p[i];
        return s;
    }
    float best[ATTN_TOPK_MAX]; // descending
    if (k > ATTN_TOPK_MAX) k = ATTN_TOPK_MAX; // documented limit; the CLI rejects larger k
    int m = 0;
    for (int i = 0; i < n; i++) {
        float v = p[i];
        if (m == k && v <= best[k - 1]) continue;
        int j = m < k ? m++ : k - 1;
        while (j > 0 && best[j - 1] < v) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = v;
    }
    double s = 0;
    for (int i = 0; i < m; i++) s += best[i];
    return s;
}

void attn_row_metrics(double *out, const float *p, const uint8_t *kinds, int n,
                      const AttnMetricOpts *o) {
    memset(out, 0, ATTN_METRIC_COUNT * sizeof(double));
    int above = 0, above_rel = 0;
    const float thr_rel = (float)(o->eps_rel / (double)n);
    double entropy = 0, head = 0, tail = 0;
    for (int i = 0; i < n; i++) {
        double v = p[i];
        if (p[i] > (float)o->eps) above++; // compared in the data's precision: 0.05f is not above eps 0.05
        if (p[i] > thr_rel) above_rel++;
        if (v > 0) entropy -= v * log(v);
        if (i < o->head) head += v;
        if (i >= n - o->tail) tail += v;
        if (kinds[i] < TOKEN_KIND_COUNT) out[ATTN_METRIC_MASS_KIND0 + kinds[i]] += v;
    }
    out[ATTN_METRIC_DENSITY] = (double)above / n;
    out[ATTN_METRIC_SINK_HEAD] = head;
    out[ATTN_METRIC_SINK_TAIL] = tail;
    out[ATTN_METRIC_ENTROPY] = entropy;
    out[ATTN_METRIC_ENTROPY_NORM] = n > 1 ? entropy / log((double)n) : 0.0;
    out[ATTN_METRIC_TOPK_MASS] = topk_sum(p, n, o->topk);
    out[ATTN_METRIC_FIRST_MASS] = p[0];
    out[ATTN_METRIC_N_KEYS] = n;
    out[ATTN_METRIC_DENSITY_REL] = (double)above_rel / n;
    out[ATTN_METRIC_KEYS_EPS] = above;
}

int attn_decision_row(const uint8_t *kinds, int T) {
    for (int t = T - 1; t >= 0; t--)
        if (kinds[t] != TOKEN_KIND_TARGET) return t;
    return -1;
}

// Gathers the keys row q can see (causal prefix, kept keys) into p, k; returns n.
static int row_gather(float *p, uint8_t *k, const float *row, const uint8_t *kinds,
                      const uint8_t *key_mask, int q) {
    int n = 0;
    for (int j = 0; j <= q; j++)
        if (key_mask[j]) {
            p[n] = row[j];
            k[n] = kinds[j];
            n++;
        }
    return n;
}

void attn_head_metrics(double *out, int *valid, const float *A, const uint8_t *kinds,
                       const uint8_t *row_mask, const uint8_t *key_mask, int T,
                       const AttnMetricOpts *o) {
    double *dec = out + (size_t)ATTN_ROWS_DECISION * ATTN_METRIC_COUNT;
    double *all = out + (size_t)ATTN_ROWS_ALL * ATTN_METRIC_COUNT;
    memset(out, 0, (size_t)ATTN_ROWS_COUNT * ATTN_METRIC_COUNT * sizeof(double));
    valid[ATTN_ROWS_DECISION] = valid[ATTN_ROWS_ALL] = 0;
    float *p = xmalloc((size_t)T * sizeof(float));
    uint8_t *k = xmalloc((size_t)T);
    double row[ATTN_METRIC_COUNT];
    int decision = attn_decision_row(kinds, T);
    int n_rows = 0;
    for (int q = 0; q < T; q++) {
        if (!row_mask[q]) continue;
        int n = row_gather(p, k, A + (size_t)q * (size_t)T, kinds, key_mask, q);
        if (n == 0) continue;
        attn_row_metrics(row, p, k, n, o);
        for (int m = 0; m < ATTN_METRIC_COUNT; m++) all[m] += row[m];
        n_rows++;
        if (q == decision) {
            memcpy(dec, row, sizeof row);
            valid[ATTN_ROWS_DECISION] = 1;
        }
    }
    if (n_rows > 0) {
        for (int m = 0; m < ATTN_METRIC_COUNT; m++) all[m] /= n_rows;
        valid[ATTN_ROWS_ALL] = 1;
    }
    free(p);
    free(k);
}

// ---------------------------------------------------------------------------
// Accumulation over samples

void attn_acc_init(AttnMetricsAcc *a, int n_layers, int n_heads) {
    a->n_layers = n_layers;
    a->n_heads = n_heads;
    size_t cells = (size_t)n_layers * (size_t)n_heads * ATTN_ROWS_COUNT;
    a->sum = xcalloc(cells * ATTN_METRIC_COUNT, sizeof(double));
    a->count = xcalloc(cells, sizeof(int));
}

void attn_acc_free(AttnMetricsAcc *a) {
    free(a->sum);
    free(a->count);
    a->sum = NULL;
    a->count = NULL;
}

void attn_acc_add(AttnMetricsAcc *a, int layer, int head, const double *vals, const int *valid) {
    size_t cell = ((size_t)layer * (size_t)a->n_heads + (size_t)head) * ATTN_ROWS_COUNT;
    for (int r = 0; r < ATTN_ROWS_COUNT; r++) {
        if (!valid[r]) continue;
        a->count[cell + r]++;
        for (int m = 0; m < ATTN_METRIC_COUNT; m++)
            a->sum[(cell + r) * ATTN_METRIC_COUNT + m] += vals[r * ATTN_METRIC_COUNT + m];
    }
}

int attn_dump_check_head(const float *A, const AttnDumpReader *r, const AttnSample *s, int layer, int head,
                         double sum_tol, Error *e) {
    size_t T = (size_t)s->T;
    char why[160];
    int q = attn_head_check(A, s->row_mask + (size_t)layer * T, s->key_mask + (size_t)layer * T, s->T, sum_tol,
                            why, sizeof why);
    if (q < 0) return 0;
    return err_set(e, "%s: /samples/%s/attn: sample %d, layer %d, head %d, row %d is not a probability "
                   "distribution: %s (the analysis reads post-softmax attention)", r->path, r->names[s->index],
                   s->index, layer, head, q, why);
}

int attn_acc_add_sample(AttnMetricsAcc *a, AttnDumpReader *r, const AttnSample *s,
                        const AttnMetricOpts *o, Error *e) {
    size_t T = (size_t)s->T;
    float *A = xmalloc(T * T * sizeof(float));
    double vals[ATTN_ROWS_COUNT * ATTN_METRIC_COUNT];
    int valid[ATTN_ROWS_COUNT];
    for (int l = 0; l < a->n_layers; l++)
        for (int h = 0; h < a->n_heads; h++) {
            if (attn_dump_read_head(A, r, s, l, h, e) ||
                attn_dump_check_head(A, r, s, l, h, o->sum_tol, e)) {
                free(A);
                return -1;
            }
            attn_head_metrics(vals, valid, A, s->kinds, s->row_mask + (size_t)l * T,
                              s->key_mask + (size_t)l * T, s->T, o);
            attn_acc_add(a, l, h, vals, valid);
        }
    free(A);
    return 0;
}

// Mean over samples for one real (layer, head).
static int acc_cell(const AttnMetricsAcc *a, int layer, int head, int rows, int metric, double *v) {
    size_t cell = ((size_t)layer * (size_t)a->n_heads + (size_t)head) * ATTN_ROWS_COUNT + (size_t)rows;
    if (a->count[cell] == 0) return 0;
    *v = a->sum[cell * ATTN_METRIC_COUNT + (size_t)metric] / a->count[cell];
    return 1;
}

// One layer: a real head, or the mean over heads that have a value.
static int acc_layer(const AttnMetricsAcc *a, int layer, int head, int rows, int metric, double *v) {
    if (head != ATTN_HEAD_MEAN) return acc_cell(a, layer, head, rows, metric, v);
    double s = 0, x;
    int n = 0;
    for (int h = 0; h < a->n_heads; h++)
        if (acc_cell(a, layer, h, rows, metric, &x)) {
            s += x;
            n++;
        }
    if (n == 0) return 0;
    *v = s / n;
    return 1;
}

int attn_acc_value(const AttnMetricsAcc *a, int layer, int head, int rows, int metric, double *value) {
    if (head < ATTN_HEAD_MEAN || head >= a->n_heads || rows < 0 || rows >= ATTN_ROWS_COUNT ||
        metric < 0 || metric >= ATTN_METRIC_COUNT || layer < ATTN_LAYER_LATE || layer >= a->n_layers)
        return 0;
    if (layer >= 0) return acc_layer(a, layer, head, rows, metric, value);
    // early: 2l < N (l < N/2), late: 2l >= N; the mean of the layers that have a value
    double s = 0, x;
    int n = 0;
    for (int l = 0; l < a->n_layers; l++) {
        int early = 2 * l < a->n_layers;
        if (early != (layer == ATTN_LAYER_EARLY)) continue;
        if (acc_layer(a, l, head, rows, metric, &x)) {
            s += x;
            n++;
        }
    }
    if (n == 0) return 0;
    *value = s / n;
    return 1;
}

void attn_acc_write_csv(FILE *f, const AttnMetricsAcc *a) {
    fprintf(f, "layer,head,rows,metric,value\n");
    // layers 0..L-1, then early (-1) and late (-2); heads 0..H-1, then the mean (-1)
    for (int li = 0; li < a->n_layers + 2; li++) {
        int layer = li < a->n_layers ? li : (li == a->n_layers ? ATTN_LAYER_EARLY : ATTN_LAYER_LATE);
        for (int hi = 0; hi <= a->n_heads; hi++) {
            int head = hi < a->n_heads ? hi : ATTN_HEAD_MEAN;
            for (int r = 0; r < ATTN_ROWS_COUNT; r++)
                for (int m = 0; m < ATTN_METRIC_COUNT; m++) {
                    double v;
                    if (attn_acc_value(a, layer, head, r, m, &v))
                        fprintf(f, "%d,%d,%s,%s,%.9g\n", layer, head, attn_rows_name(r),
                                attn_metric_name(m), v);
                }
        }
    }
}
