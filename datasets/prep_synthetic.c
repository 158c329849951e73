// prep_synthetic.c: a generated interaction log with planted sequential
// structure, the project's small default dataset. See prepare.h.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/prepare.h"

void synth_config_default(SynthConfig *c) {
    c->n_users = 2000;
    c->n_items = 500;
    c->n_clusters = 20;
    c->min_len = 5;
    c->max_len = 30;
    c->p_follow = 0.6f;
    c->p_stay = 0.3f;
    c->seed = 1;
}

int synth_check(const SynthConfig *c, Error *e) {
    if (c->n_users < 1 || c->n_users > 10000000) return err_set(e, "--users must be in 1..10000000");
    if (c->n_items < 2 || c->n_items > 10000000) return err_set(e, "--items must be in 2..10000000");
    if (c->n_clusters < 1 || c->n_clusters > c->n_items)
        return err_set(e, "--clusters must be in 1..items (%d)", c->n_items);
    if (c->min_len < 1 || c->max_len < c->min_len || c->max_len > 100000)
        return err_set(e, "--min-len/--max-len must satisfy 1 <= min <= max <= 100000");
    if (!(c->p_follow >= 0.0f) || !(c->p_stay >= 0.0f) || c->p_follow + c->p_stay > 1.0f)
        return err_set(e, "--p-follow and --p-stay must be >= 0 with a sum <= 1");
    return 0;
}

static int rng_below(Rng *r, int n) { return (int)(rng_u64(r) % (uint64_t)n); }

static void shuffle(int *a, int n, Rng *r) {
    for (int i = n - 1; i > 0; i--) {
        int j = rng_below(r, i + 1);
        int t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

// Index of the first cumulative weight above u * total (binary search).
static int sample_cdf(const double *cdf, int n, Rng *r) {
    double u = rng_uniform(r) * cdf[n - 1];
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (cdf[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void synth_generate(RawLog *log, int *item_cluster, const SynthConfig *c) {
    Rng rng;
    rng_seed(&rng, c->seed);
    int I = c->n_items, C = c->n_clusters;
    int *perm = xmalloc((size_t)I * sizeof *perm);
    int *cluster = xmalloc((size_t)I * sizeof *cluster);
    // Clusters of (nearly) equal size over a random item order; members listed per cluster.
    for (int i = 0; i < I; i++) perm[i] = i;
    shuffle(perm, I, &rng);
    int *member_off = xcalloc((size_t)C + 1, sizeof *member_off);
    int *members = xmalloc((size_t)I * sizeof *members);
    for (int p = 0; p < I; p++) cluster[perm[p]] = p % C;
    for (int i = 0; i < I; i++) member_off[cluster[i] + 1]++;
    for (int k = 0; k < C; k++) member_off[k + 1] += member_off[k];
    int *fill = xmalloc((size_t)C * sizeof *fill);
    memcpy(fill, member_off, (size_t)C * sizeof *fill);
    for (int i = 0; i < I; i++) members[fill[cluster[i]]++] = i;
    free(fill);
    // Clusters form one random cycle; each item's successor lives in the next cluster.
    int *cycle = xmalloc((size_t)C * sizeof *cycle), *next_cluster = xmalloc((size_t)C * sizeof *next_cluster);
    for (int k = 0; k < C; k++) cycle[k] = k;
    shuffle(cycle, C, &rng);
    for (int k = 0; k < C; k++) next_cluster[cycle[k]] = cycle[(k + 1) % C];
    int *succ = xmalloc((size_t)I * sizeof *succ);
    for (int i = 0; i < I; i++) {
        int nc = next_cluster[cluster[i]];
        succ[i] = members[member_off[nc] + rng_below(&rng, member_off[nc + 1] - member_off[nc])];
    }
    // Popularity: Zipf-like weights 1 / (rank + 1)^0.8 over a random ranking.
    for (int i = 0; i < I; i++) perm[i] = i;
    shuffle(perm, I, &rng);
    double *cdf = xmalloc((size_t)I * sizeof *cdf), acc = 0.0;
    for (int r = 0; r < I; r++) {
        acc += 1.0 / pow(r + 1.0, 0.8);
        cdf[r] = acc;
    }

    const int64_t T = 100000000; // the global time range
    int64_t *times = xmalloc((size_t)c->max_len * sizeof *times);
    for (int u = 0; u < c->n_users; u++) {
        int len = c->min_len + rng_below(&rng, c->max_len - c->min_len + 1);
        for (int t = 0; t < len; t++) times[t] = (int64_t)(rng_u64(&rng) % (uint64_t)T);
        qsort(times, (size_t)len, sizeof *times, cmp_i64);
        int cur = perm[sample_cdf(cdf, I, &rng)];
        raw_log_push(log, u, cur, times[0]);
        for (int t = 1; t < len; t++) {
            float x = rng_uniform(&rng);
            if (x < c->p_follow) {
                cur = succ[cur];
            } else if (x < c->p_follow + c->p_stay) {
                int k = cluster[cur];
                cur = members[member_off[k] + rng_below(&rng, member_off[k + 1] - member_off[k])];
            } else {
                cur = perm[sample_cdf(cdf, I, &rng)];
            }
            raw_log_push(log, u, cur, times[t]);
        }
    }
    if (item_cluster) memcpy(item_cluster, cluster, (size_t)I * sizeof *cluster);
    free(times);
    free(cdf);
    free(succ);
    free(cycle);
    free(next_cluster);
    free(members);
    free(member_off);
    free(cluster);
    free(perm);
}
