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
#include "experiments/cli.h"
#include "experiments/commands.h"
#include "runtime/util.h"

static const char *ANALYZE_ABOUT =
    "  Attention metrics of an attention dump (earnest dump-attn, or any dump with the minimal schema\n"
    "  of analysis/attn_dump.h), per layer and head, for the decision row (the last prompt position)\n"
    "  and the mean over all computed rows; several samples are averaged (mean of per-sample values).\n"
    "  With --heatmap L,H,S: instead of metrics, attn[L,H] of sample S (0-based, in name order) as\n"
    "  query,key,p,query_kind,key_kind (p = nan where the query cannot see the key).\n"
    "  Metrics CSV: header layer,head,rows,metric,value; rows = decision|all; head -1 = mean over\n"
    "  heads; layer -1 = mean over early layers (l < N/2), layer -2 = mean over late layers (l >= N/2).\n"
    "  Metrics: density_eps, sink_head, sink_tail, entropy (nats), entropy_norm (entropy / ln n),\n"
    "  topk_mass, first_mass, mass_<kind> for special, prefix_reg, instruction, history, suffix_reg,\n"
    "  target, n_keys (visible keys), density_rel (share of visible keys with p > C/n, C = --eps-rel:\n"
    "  a length-normalised density; C = 1 counts the keys above the uniform share) and keys_eps\n"
    "  (keys with p > eps, = density_eps x n). A short summary goes to stdout.\n"
    "  --len-range LO,HI analyses only the samples whose prompt (tokens up to the last non-target\n"
    "  token) has LO <= length < HI tokens, for comparisons at equal length; when none is in range\n"
    "  the CSV holds the header only.\n"
    "  The attention must be post-softmax: a computed row (row_mask) with a non-finite or negative entry\n"
    "  among the keys it sees (causal prefix, key_mask), or whose entries there sum to 1 +- more than\n"
    "  --sum-tol, is an error naming sample, layer, head and row, and nothing is written.\n";

// How a value changes from a (early) to b (late); within 2% of the larger (or 0.005) is flat.
static const char *trend(double a, double b) {
    double tol = fmax(0.005, 0.02 * fmax(fabs(a), fabs(b)));
    if (b - a > tol) return "rises";
    if (a - b > tol) return "falls";
    return "is about flat";
}

static void print_summary(const AttnMetricsAcc *acc, const AttnDumpReader *r, const char *in,
                          const AttnMetricOpts *o, int n_used, int lo, int hi) {
    const AttnDumpInfo *info = &r->info;
    printf("%s: %d samples, %d layers x %d heads, method %s", in, r->n_samples, info->n_layers,
           info->n_heads, info->method);
    if (info->layer_split_k > 0) printf(" (k = %d)", info->layer_split_k);
    if (hi > 0) printf(", %d with a prompt of %d..%d tokens", n_used, lo, hi - 1);
    printf("\n");
    for (int rows = 0; rows < ATTN_ROWS_COUNT; rows++) {
        double early, late;
        int ok = attn_acc_value(acc, ATTN_LAYER_EARLY, ATTN_HEAD_MEAN, rows, ATTN_METRIC_DENSITY, &early) &&
                 attn_acc_value(acc, ATTN_LAYER_LATE, ATTN_HEAD_MEAN, rows, ATTN_METRIC_DENSITY, &late);
        if (ok)
            printf("density_eps (eps %g, %s rows): early %.4f, late %.4f -> density %s with depth\n",
                   o->eps, attn_rows_name(rows), early, late, trend(early, late));
        ok = attn_acc_value(acc, ATTN_LAYER_EARLY, ATTN_HEAD_MEAN, rows, ATTN_METRIC_DENSITY_REL, &early) &&
             attn_acc_value(acc, ATTN_LAYER_LATE, ATTN_HEAD_MEAN, rows, ATTN_METRIC_DENSITY_REL, &late);
        if (ok)
            printf("density_rel (p > %g/n, %s rows): early %.4f, late %.4f -> density %s with depth\n",
                   o->eps_rel, attn_rows_name(rows), early, late, trend(early, late));
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
static int write_heatmap(AttnDumpReader *r, int layer, int head, int sample, double sum_tol, const char *out,
                         Error *e) {
    if (sample >= r->n_samples)
        return err_set(e, "--heatmap: sample %d out of range (%s holds %d)", sample, r->path, r->n_samples);
    if (layer >= r->info.n_layers || head >= r->info.n_heads)
        return err_set(e, "--heatmap: layer %d / head %d out of range (%s: %d layers, %d heads)", layer,
                       head, r->path, r->info.n_layers, r->info.n_heads);
    AttnSample s;
    if (attn_dump_read_sample(&s, r, sample, e)) return -1;
    size_t T = (size_t)s.T;
    float *A = xmalloc(T * T * sizeof(float));
    if (attn_dump_read_head(A, r, &s, layer, head, e) || attn_dump_check_head(A, r, &s, layer, head, sum_tol, e)) {
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
    const char *in = NULL, *out = NULL;
    AttnMetricOpts o;
    attn_metric_opts_default(&o);
    CliIntList heat = {0}, len_range = {0};
    int n_in = 0;
    CliFlag flags[] = {
        {"--out", CLI_STRING, &out, .meta = "M.csv", .required = 1, .help = "CSV to write (atomically)"},
        {"--eps", CLI_DOUBLE, &o.eps, .lo = 0, .hi = 1,
         .help = "density threshold: density_eps = share of visible keys with p > X, in [0, 1)"},
        {"--head", CLI_INT, &o.head, .lo = 0, .hi = 1000000, .help = "sink_head = mass on the first N visible keys"},
        {"--tail", CLI_INT, &o.tail, .lo = 0, .hi = 1000000, .help = "sink_tail = mass on the last N visible keys"},
        {"--topk", CLI_INT, &o.topk, .lo = 1, .hi = ATTN_TOPK_MAX, .help = "topk_mass = mass on the N largest entries"},
        {"--sum-tol", CLI_DOUBLE, &o.sum_tol, .lo = 0, .hi = 1,
         .help = "every computed row's visible entries must sum to 1 within X (loosen it for bf16 dumps)"},
        {"--eps-rel", CLI_DOUBLE, &o.eps_rel, .lo = 0, .hi = 1e9,
         .help = "density_rel = share of visible keys with p > X/n (X > 0; 1: above the uniform share)"},
        {"--len-range", CLI_INT_LIST, &len_range, .lo = 0, .hi = 1 << 30, .meta = "LO,HI",
         .help = "only samples whose prompt has LO <= length < HI tokens"},
        {"--heatmap", CLI_INT_LIST, &heat, .lo = 0, .hi = 1 << 30, .meta = "L,H,S",
         .help = "write attn[L,H] of sample S instead of the metrics"},
    };
    CliSpec cli = {.verb = "analyze", .synopsis = "A.h5 [--eps 0.05] [--head 3] [--tail 3] [--topk 5] --out M.csv\n"
                   "       earnest analyze A.h5 --heatmap LAYER,HEAD,SAMPLE --out HEAT.csv",
                   .about = ANALYZE_ABOUT, .flags = flags, .n_flags = CLI_COUNT(flags),
                   .args = &in, .min_args = 1, .max_args = 1, .n_args = &n_in, .args_meta = "the input dump A.h5"};
    int st = cli_parse(&cli, argc, argv);
    if (st >= 0) return st;
    if (!strcmp(in, out)) {
        fprintf(stderr, "earnest analyze: --out names the input dump '%s'; nothing was written\n", in);
        cli_free(&cli);
        return 2;
    }
    if (!(o.eps < 1)) {
        fprintf(stderr, "earnest analyze: --eps: %g is not in [0, 1)\n", o.eps);
        cli_free(&cli);
        return 2;
    }
    if (!(o.eps_rel > 0)) {
        fprintf(stderr, "earnest analyze: --eps-rel: %g is not > 0\n", o.eps_rel);
        cli_free(&cli);
        return 2;
    }
    if (len_range.n && (len_range.n != 2 || len_range.v[0] >= len_range.v[1])) {
        fprintf(stderr, "earnest analyze: --len-range: expected LO,HI with 0 <= LO < HI\n");
        cli_free(&cli);
        return 2;
    }
    if (heat.n && heat.n != 3) {
        fprintf(stderr, "earnest analyze: --heatmap: expected LAYER,HEAD,SAMPLE (three non-negative integers)\n");
        cli_free(&cli);
        return 2;
    }
    {
        Error le;
        if (output_lock_hold(out, &le)) { // one writer per output
            cli_free(&cli);
            return cli_fail("analyze", &le);
        }
    }
    int len_lo = len_range.n ? len_range.v[0] : 0, len_hi = len_range.n ? len_range.v[1] : 0;
    int hl = heat.n ? heat.v[0] : 0, hh = heat.n ? heat.v[1] : 0, hs = heat.n ? heat.v[2] : 0, want_heat = heat.n;
    cli_free(&cli);

    Error e;
    AttnDumpReader r;
    if (attn_dump_open(&r, in, &e)) {
        fprintf(stderr, "earnest analyze: %s\n", e.msg);
        return 1;
    }
    if (want_heat) {
        int rc = write_heatmap(&r, hl, hh, hs, o.sum_tol, out, &e);
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
    int rc = 0, n_used = 0;
    for (int i = 0; i < r.n_samples && rc == 0; i++) {
        AttnSample s;
        rc = attn_dump_read_sample(&s, &r, i, &e);
        if (rc == 0) {
            int len = attn_prompt_len(s.kinds, s.T);
            if (!len_hi || (len >= len_lo && len < len_hi)) {
                rc = attn_acc_add_sample(&acc, &r, &s, &o, &e);
                n_used++;
            }
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
        print_summary(&acc, &r, in, &o, n_used, len_lo, len_hi);
        if (n_used == 0) printf("no sample has a prompt of %d..%d tokens: the CSV holds the header only\n", len_lo,
                                len_hi - 1);
        printf("wrote %s\n", out);
    }
    attn_acc_free(&acc);
    attn_dump_reader_close(&r);
    return rc ? 1 : 0;
}
