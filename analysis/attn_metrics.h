// attn_metrics.h: attention-pattern metrics (EARN App. A.1 and friends).
//
// For one attention row p of query t in layer l, the keys the row can see are
// the causal prefix 0..t restricted to the keys layer l kept (key_mask); in
// key order they are i = 0..n-1. Over those n keys:
//   density_eps   (1/n) sum_i 1(p_i > eps)      (eps = 0.05; EARN's "sparsity")
//   sink_head     sum_{i < h} p_i               (h = 3)
//   sink_tail     sum_{i >= n - t} p_i          (t = 3)
//   entropy       -sum_i p_i ln p_i             (nats)
//   entropy_norm  entropy / ln n                (0 when n = 1: nothing to spread over)
//   topk_mass     sum of the k largest p_i      (k = 5)
//   first_mass    p_0, the mass on the first visible key
//   mass_<kind>   sum of p_i over keys of that token kind (special, prefix_reg,
//                 instruction, history, suffix_reg, target)
//   n_keys        n
//   density_rel   (1/n) sum_i 1(p_i > c/n)      (c = 1: the share of keys that get more than the
//                 uniform share 1/n; a length-normalised density: a row spread evenly over m of
//                 its n keys gives m/n at every n (for c < n/m), where density_eps gives m/n only
//                 while 1/m > eps. 0 for a uniform row and for n = 1)
//   keys_eps      sum_i 1(p_i > eps)            (= density_eps * n, the number of keys above eps)
// Row sets: "decision" is the last prompt position (the last token whose kind
// is not target; in an EARN model the last suffix register), which predicts
// the first item token; "all" is the mean over every row layer l computed.
//
// Aggregation (the analyze CSV, header layer,head,rows,metric,value):
//   - per sample, per (layer, head, rows, metric) as above;
//   - several samples: the mean of the per-sample values (samples where the
//     row set is empty in that layer do not count);
//   - head = -1: the mean over heads of the per-head values;
//   - layer = -1: the mean over early layers (l < N/2, i.e. 2l < N) of the
//     per-layer values; layer = -2: the same over late layers (2l >= N).
#ifndef EARNEST_ATTN_METRICS_H
#define EARNEST_ATTN_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "analysis/attn_dump.h"

typedef enum {
    ATTN_METRIC_DENSITY = 0,
    ATTN_METRIC_SINK_HEAD,
    ATTN_METRIC_SINK_TAIL,
    ATTN_METRIC_ENTROPY,
    ATTN_METRIC_ENTROPY_NORM,
    ATTN_METRIC_TOPK_MASS,
    ATTN_METRIC_FIRST_MASS,
    ATTN_METRIC_MASS_KIND0, // mass_special; + TokenKind for the others
    ATTN_METRIC_N_KEYS = ATTN_METRIC_MASS_KIND0 + TOKEN_KIND_COUNT,
    ATTN_METRIC_DENSITY_REL,
    ATTN_METRIC_KEYS_EPS,
    ATTN_METRIC_COUNT,
} AttnMetric;

typedef enum {
    ATTN_ROWS_DECISION = 0,
    ATTN_ROWS_ALL = 1,
    ATTN_ROWS_COUNT = 2,
} AttnRows;

#define ATTN_LAYER_EARLY (-1) // CSV layer value of the early-layer mean
#define ATTN_LAYER_LATE (-2)  // CSV layer value of the late-layer mean
#define ATTN_HEAD_MEAN (-1)   // CSV head value of the mean over heads

const char *attn_metric_name(int metric); // "density_eps", ..., "mass_history", ...
const char *attn_rows_name(int rows);     // "decision", "all"

#define ATTN_TOPK_MAX 64

#define ATTN_SUM_TOL_DEFAULT 1e-3

typedef struct {
    double eps; // density threshold
    int head;   // sink_head width
    int tail;   // sink_tail width
    int topk;   // topk_mass width, 1..ATTN_TOPK_MAX
    double sum_tol; // a read row's visible entries must sum to 1 within this (absolute)
    double eps_rel; // density_rel threshold, in units of the uniform share 1/n (> 0)
} AttnMetricOpts;

void attn_metric_opts_default(AttnMetricOpts *o); // 0.05, 3, 3, 5, ATTN_SUM_TOL_DEFAULT, 1.0

// density_rel of one row, the plain reference twin of the fused loop in
// attn_row_metrics: (1/n) * #{i : p_i > c/n}, the threshold rounded to float
// as the fused loop compares it (in the data's precision). n >= 1.
double attn_density_rel_ref(const float *p, int n, double c);

// Prompt length of a sample: the decision row + 1 (tokens up to the last
// non-target token); 0 when every token is a target.
int attn_prompt_len(const uint8_t *kinds, int T);

// The metrics assume post-softmax attention. attn_head_check checks one
// (layer, head) matrix A [T,T]: every row the layer computed (row_mask), over
// the keys it can see (causal prefix 0..q, kept keys of key_mask), must be a
// probability distribution: each entry finite and >= 0, their sum (in double)
// within sum_tol of 1. Rows the layer did not compute, rows that see no key
// and entries the row cannot see are not looked at (a dump holds 0 there).
// 1e-3 covers float32 softmax rounding at any T <= ATTN_DUMP_MAX_T and a
// float16 dump; a bfloat16 model needs a looser tolerance (analyze --sum-tol).
// Returns -1 when every row passes, else the first bad row, with why [n]
// saying what is wrong ("entry at key 3 is nan", "sums to 0.75").
int attn_head_check(const float *A, const uint8_t *row_mask, const uint8_t *key_mask, int T, double sum_tol,
                    char *why, size_t n);

// Metrics of one row: p [n] the probabilities of the visible keys in key
// order, kinds [n] their token kinds; n >= 1. out [ATTN_METRIC_COUNT].
void attn_row_metrics(double *out, const float *p, const uint8_t *kinds, int n,
                      const AttnMetricOpts *o);

// The decision row of a sample: the last t with kinds[t] != target; -1 when none.
int attn_decision_row(const uint8_t *kinds, int T);

// Metrics of one (layer, head) matrix of a sample.
// out [ATTN_ROWS_COUNT, ATTN_METRIC_COUNT]; valid [ATTN_ROWS_COUNT] is 1 where
// the row set had at least one computed row with a visible key (0: out is 0).
// A [T,T] the attention; row_mask [T], key_mask [T] this layer's masks.
void attn_head_metrics(double *out, int *valid, const float *A, const uint8_t *kinds,
                       const uint8_t *row_mask, const uint8_t *key_mask, int T,
                       const AttnMetricOpts *o);

// Accumulates per-sample values over samples and produces the CSV table.
typedef struct {
    int n_layers;
    int n_heads;
    double *sum; // [L, H, ATTN_ROWS_COUNT, ATTN_METRIC_COUNT] sums of per-sample values
    int *count;  // [L, H, ATTN_ROWS_COUNT] samples that contributed
} AttnMetricsAcc;

void attn_acc_init(AttnMetricsAcc *a, int n_layers, int n_heads);
void attn_acc_free(AttnMetricsAcc *a);
// Adds one sample's attn_head_metrics output for (layer, head).
void attn_acc_add(AttnMetricsAcc *a, int layer, int head, const double *vals, const int *valid);
// attn_head_check on attn[layer, head] (A [T,T]) of sample s as read from r,
// as an error naming the dump, the sample, the layer, the head and the row.
int attn_dump_check_head(const float *A, const AttnDumpReader *r, const AttnSample *s, int layer, int head,
                         double sum_tol, Error *e);
// Reads every (layer, head) of one sample from a dump, checks it
// (attn_head_check with o->sum_tol; a bad row is an error naming the sample,
// layer, head and row) and adds it.
int attn_acc_add_sample(AttnMetricsAcc *a, AttnDumpReader *r, const AttnSample *s,
                        const AttnMetricOpts *o, Error *e);
// The aggregated value at (layer, head, rows, metric) with the CSV's
// conventions (layer -1/-2 early/late, head -1 mean). Returns 1 and sets
// *value when defined, 0 when no sample contributed.
int attn_acc_value(const AttnMetricsAcc *a, int layer, int head, int rows, int metric, double *value);
// Writes the tidy CSV (header layer,head,rows,metric,value); rows with no
// value are left out.
void attn_acc_write_csv(FILE *f, const AttnMetricsAcc *a);

#endif
