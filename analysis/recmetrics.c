// recmetrics.c: see recmetrics.h.
#include "analysis/recmetrics.h"

#include <math.h>
#include <string.h>

#include "runtime/util.h"

void recmetrics_init(RecMetrics *m, const int *ks, int n_k) {
    CHECK(n_k >= 1 && n_k <= RECMETRICS_MAX_K, "recmetrics_init: %d cutoffs", n_k);
    memset(m, 0, sizeof *m);
    m->n_k = n_k;
    for (int i = 0; i < n_k; i++) {
        CHECK(ks[i] >= 1, "recmetrics_init: cutoff %d < 1", ks[i]);
        m->ks[i] = ks[i];
    }
}

// Rank of `code` among ranked[0..n) (first occurrence), or -1.
static int rank_of(const char *code, const char *const *ranked, int n) {
    for (int j = 0; j < n; j++)
        if (!strcmp(ranked[j], code)) return j;
    return -1;
}

int recmetrics_user(double *recall, double *ndcg, const RecMetrics *m, const char *const *ranked, int n_ranked,
                    const char *const *targets, int n_targets) {
    if (n_targets <= 0) return 0;
    for (int i = 0; i < m->n_k; i++) {
        int K = m->ks[i], top = K < n_ranked ? K : n_ranked;
        // Recall: targets whose code is in the top K (colliding targets each count).
        int hits = 0;
        for (int g = 0; g < n_targets; g++) hits += rank_of(targets[g], ranked, top) >= 0;
        // NDCG: positions of the top K holding some target's code, against the ideal ranking.
        double dcg = 0.0, idcg = 0.0;
        for (int j = 0; j < top; j++)
            if (rank_of(ranked[j], targets, n_targets) >= 0) dcg += 1.0 / log2((double)j + 2.0);
        int ideal = n_targets < K ? n_targets : K;
        for (int j = 0; j < ideal; j++) idcg += 1.0 / log2((double)j + 2.0);
        if (recall) recall[i] = (double)hits / (double)n_targets;
        if (ndcg) ndcg[i] = dcg / idcg;
    }
    return 1;
}

int recmetrics_add(RecMetrics *m, const char *const *ranked, int n_ranked, const char *const *targets, int n_targets) {
    double r[RECMETRICS_MAX_K], n[RECMETRICS_MAX_K];
    if (!recmetrics_user(r, n, m, ranked, n_ranked, targets, n_targets)) return 0;
    for (int i = 0; i < m->n_k; i++) {
        m->recall_sum[i] += r[i];
        m->ndcg_sum[i] += n[i];
    }
    m->n_users++;
    return 1;
}

double recmetrics_recall(const RecMetrics *m, int i) {
    return m->n_users ? m->recall_sum[i] / (double)m->n_users : 0.0;
}

double recmetrics_ndcg(const RecMetrics *m, int i) {
    return m->n_users ? m->ndcg_sum[i] / (double)m->n_users : 0.0;
}

static int k_index(const RecMetrics *m, int K) {
    for (int i = 0; i < m->n_k; i++)
        if (m->ks[i] == K) return i;
    DIE("recmetrics: K = %d is not one of the %d cutoffs these metrics were initialised with", K, m->n_k);
}

double recmetrics_recall_at(const RecMetrics *m, int K) { return recmetrics_recall(m, k_index(m, K)); }
double recmetrics_ndcg_at(const RecMetrics *m, int K) { return recmetrics_ndcg(m, k_index(m, K)); }
