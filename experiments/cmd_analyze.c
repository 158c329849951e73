// cmd_analyze.c: `earnest analyze A.h5 --out M.csv`: attention metrics of a
// dump as a tidy CSV (layer,head,rows,metric,value) plus a short text
// summary; or, with --heatmap L,H,S, one attention matrix as a long CSV for
// the heatmap figure.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/attn_dump.h"
#include "analysis/attn_metrics.h"
#include "experiments/commands.h"
#include "runtime/util.h"

static void analyze_usage(FILE *f) {
    fprintf(f,
        "usage: earnest analyze A.h5 [--eps 0.05] [--head 3] [--tail 3] [--topk 5] --out M.csv\n"
        "       earnest analyze A.h5 --heatmap LAYER,HEAD,SAMPLE --out HEAT.csv\n"
        "\n"
        "Attention metrics of an attention dump (earnest dump-attn), per layer and head,\n"
        "for the decision row (the last prompt position) and the mean over all computed rows;\n"
        "several samples are averaged (mean of per-sample values).\n"
        "\n"
        "  --eps F       density threshold: density_eps = share of visible keys with p > F (0.05)\n"
        "  --head N      sink_head = mass on the first N visible keys (3)\n"
        "  --tail N      sink_tail = mass on the last N visible keys (3)\n"
        "  --topk N      topk_mass = mass on the N largest entries, 1..%d (5)\n"
        "  --out PATH    CSV to write (atomically)\n"
        "  --heatmap L,H,S  instead of metrics: write attn[L,H] of sample S (0-based, in name order)\n"
        "                as query,key,p,query_kind,key_kind (p = nan where the query cannot see the key)\n"
        "\n"
        "Metrics CSV: header layer,head,rows,metric,value; rows = decision|all;\n"
        "head -1 = mean over heads; layer -1 = mean over early layers (l < N/2),\n"
        "layer -2 = mean over late layers (l >= N/2). Metrics: density_eps, sink_head,\n"
        "sink_tail, entropy (nats), entropy_norm (entropy / ln n), topk_mass, first_mass,\n"
        "mass_<kind> for special, prefix_reg, instruction, history, suffix_reg, target,\n"
        "and n_keys (visible keys). A short summary goes to stdout.\n",
        ATTN_TOPK_MAX);
}

static int parse_int(const char *s, const char *flag, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "earnest analyze: %s '%s': expected an integer in %d..%d\n", flag, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

// How a value changes from a (early) to b (late); within 2% of the larger (or 0.005) is flat.
static const char *trend(double a, double b) {
    double tol = fmax(0.005, 0.02 * fmax(fabs(a), fabs(b)));
    if (b - a > tol) return "rises";
    if (a - b > tol) return "falls";
    return "is about flat";
}

static void print_summary(const AttnMetricsAcc *acc, const AttnDumpReader *r, const char *in,
                          const AttnMetricOpts *o) {
    const AttnDumpInfo *info = &r->info;
    printf("%s: %d samples, %d layers x %d heads, method %s", in, r->n_samples, info->n_layers,
           info->n_heads, info->method);
    if (info->layer_split_k > 0) printf(" (k = %d)", info->layer_split_k);
    printf("\n");
    for (int rows = 0; rows < ATTN_ROWS_COUNT; rows++) {
        double early, late;
        int ok = attn_acc_value(acc, ATTN_LAYER_EARLY, ATTN_HEAD_MEAN, rows, ATTN_METRIC_DENSITY, &early) &&
                 attn_acc_value(acc, ATTN_LAYER_LATE, ATTN_HEAD_MEAN, rows, ATTN_METRIC_DENSITY, &late);
        if (ok)
            printf("density_eps (eps %g, %s rows): early %.4f, late %.4f -> density %s with depth\n",
                   o->eps, attn_rows_name(rows), early, late, trend(early, late));
    }
    for (int scope = ATTN_LAYER_EARLY; scope >= ATTN_LAYER_LATE; scope--) {
        double hd, tl;
        if (attn_acc_value(acc, scope, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_HEAD, &hd) &&
            attn_acc_value(acc, scope, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ATTN_METRIC_SINK_TAIL, &tl)) {
            const char *cmp = fabs(hd - tl) <= fmax(0.005, 0.1 * fmax(hd, tl)) ? "comparable"
                              : hd > tl ? "head sink stronger" : "tail sink stronger";
            printf("sinks (%s layers, decision row): head %.4f (first %d keys), tail %.4f (last %d keys) -> %s\n",
                   scope == ATTN_LAYER_EARLY ? "early" : "late", hd, o->head, tl, o->tail, cmp);
        }
    }
    printf("per layer (decision row, mean over heads):\n  layer  density_eps  sink_head  sink_tail  entropy_norm\n");
    for (int l = 0; l < info->n_layers; l++) {
        double v[4];
        int ms[4] = {ATTN_METRIC_DENSITY, ATTN_METRIC_SINK_HEAD, ATTN_METRIC_SINK_TAIL, ATTN_METRIC_ENTROPY_NORM};
        int ok = 1;
        for (int i = 0; i < 4; i++)
            ok &= attn_acc_value(acc, l, ATTN_HEAD_MEAN, ATTN_ROWS_DECISION, ms[i], &v[i]);
        if (ok) printf("  %5d  %11.4f  %9.4f  %9.4f  %12.4f\n", l, v[0], v[1], v[2], v[3]);
        else printf("  %5d  (decision row not computed)\n", l);
    }
}

// Writes attn[layer, head] of sample s as a long CSV.
static int write_heatmap(AttnDumpReader *r, int layer, int head, int sample, const char *out, Error *e) {
    if (sample >= r->n_samples)
        return err_set(e, "--heatmap: sample %d out of range (%s holds %d)", sample, r->path, r->n_samples);
    if (layer >= r->info.n_layers || head >= r->info.n_heads)
        return err_set(e, "--heatmap: layer %d / head %d out of range (%s: %d layers, %d heads)", layer,
                       head, r->path, r->info.n_layers, r->info.n_heads);
    AttnSample s;
    if (attn_dump_read_sample(&s, r, sample, e)) return -1;
    size_t T = (size_t)s.T;
    float *A = xmalloc(T * T * sizeof(float));
    if (attn_dump_read_head(A, r, &s, layer, head, e)) {
        free(A);
        attn_sample_free(&s);
        return -1;
    }
    AtomicFile af;
    if (atomic_open(&af, out, e)) {
        free(A);
        attn_sample_free(&s);
        return -1;
    }
    const uint8_t *rows = s.row_mask + (size_t)layer * T, *keys = s.key_mask + (size_t)layer * T;
    fprintf(af.f, "query,key,p,query_kind,key_kind\n");
    for (size_t q = 0; q < T; q++)
        for (size_t k = 0; k < T; k++) {
            // nan marks what the query cannot see, so the figure leaves it blank
            if (rows[q] && keys[k] && k <= q)
                fprintf(af.f, "%zu,%zu,%.7g,%d,%d\n", q, k, A[q * T + k], s.kinds[q], s.kinds[k]);
            else
                fprintf(af.f, "%zu,%zu,nan,%d,%d\n", q, k, s.kinds[q], s.kinds[k]);
        }
    free(A);
    attn_sample_free(&s);
    return atomic_commit(&af, e);
}

int cmd_analyze(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *heat = NULL;
    AttnMetricOpts o;
    attn_metric_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            analyze_usage(stdout);
            return 0;
        }
        if (a[0] == '-' && a[1] == '-') {
            if (i + 1 >= argc) {
                fprintf(stderr, "earnest analyze: %s needs a value\n", a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--heatmap")) heat = v;
            else if (!strcmp(a, "--eps")) {
                char *end;
                errno = 0;
                o.eps = strtod(v, &end);
                if (errno || end == v || *end || !(o.eps >= 0 && o.eps < 1)) {
                    fprintf(stderr, "earnest analyze: --eps '%s': expected a number in [0, 1)\n", v);
                    return 2;
                }
            } else if (!strcmp(a, "--head")) {
                if (parse_int(v, a, 0, 1000000, &o.head)) return 2;
            } else if (!strcmp(a, "--tail")) {
                if (parse_int(v, a, 0, 1000000, &o.tail)) return 2;
            } else if (!strcmp(a, "--topk")) {
                if (parse_int(v, a, 1, ATTN_TOPK_MAX, &o.topk)) return 2;
            } else {
                fprintf(stderr, "earnest analyze: unknown option '%s' (see earnest analyze --help)\n", a);
                return 2;
            }
        } else if (!in) {
            in = a;
        } else {
            fprintf(stderr, "earnest analyze: more than one input dump ('%s' and '%s')\n", in, a);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "earnest analyze: %s is required\n", !in ? "an input dump A.h5" : "--out");
        analyze_usage(stderr);
        return 2;
    }
    int hl = 0, hh = 0, hs = 0;
    if (heat) {
        char tail;
        if (sscanf(heat, "%d,%d,%d%c", &hl, &hh, &hs, &tail) != 3 || hl < 0 || hh < 0 || hs < 0) {
            fprintf(stderr, "earnest analyze: --heatmap '%s': expected LAYER,HEAD,SAMPLE (non-negative integers)\n", heat);
            return 2;
        }
    }

    Error e;
    AttnDumpReader r;
    if (attn_dump_open(&r, in, &e)) {
        fprintf(stderr, "earnest analyze: %s\n", e.msg);
        return 1;
    }
    if (heat) {
        int rc = write_heatmap(&r, hl, hh, hs, out, &e);
        attn_dump_reader_close(&r);
        if (rc) {
            fprintf(stderr, "earnest analyze: %s\n", e.msg);
            return 1;
        }
        printf("wrote %s (layer %d, head %d, sample %d)\n", out, hl, hh, hs);
        return 0;
    }
    if (r.n_samples == 0) {
        fprintf(stderr, "earnest analyze: %s: the dump holds no samples\n", in);
        attn_dump_reader_close(&r);
        return 1;
    }
    AttnMetricsAcc acc;
    attn_acc_init(&acc, r.info.n_layers, r.info.n_heads);
    int rc = 0;
    for (int i = 0; i < r.n_samples && rc == 0; i++) {
        AttnSample s;
        rc = attn_dump_read_sample(&s, &r, i, &e);
        if (rc == 0) {
            rc = attn_acc_add_sample(&acc, &r, &s, &o, &e);
            attn_sample_free(&s);
        }
    }
    AtomicFile af;
    if (rc == 0) rc = atomic_open(&af, out, &e);
    if (rc == 0) {
        attn_acc_write_csv(af.f, &acc);
        rc = atomic_commit(&af, &e);
    }
    if (rc) {
        fprintf(stderr, "earnest analyze: %s\n", e.msg);
    } else {
        print_summary(&acc, &r, in, &o);
        printf("wrote %s\n", out);
    }
    attn_acc_free(&acc);
    attn_dump_reader_close(&r);
    return rc ? 1 : 0;
}
