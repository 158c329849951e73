// recmetrics.h: top-K recommendation metrics over item codes (DESIGN.md, "Metrics").
//
// Per user, with ranked codes P_0, P_1, ... (distinct strings, best first) and
// the target items G (one code string per distinct target item; two targets
// may share a code when codes collide):
//   Recall@K = |{g in G : code(g) in {P_0..P_{K-1}}}| / |G|
//              (a colliding code in the top K is a hit for every target sharing it)
//   NDCG@K   = sum_{j<K, P_j in codes(G)} 1/log2(j+2) / sum_{j<min(|G|,K)} 1/log2(j+2)
// Users with no target are skipped (not counted). Codes are compared as strings.
// The reported figure is the mean over counted users.
#ifndef EARNEST_RECMETRICS_H
#define EARNEST_RECMETRICS_H

#define RECMETRICS_MAX_K 16

typedef struct {
    int n_k;
    int ks[RECMETRICS_MAX_K];
    double recall_sum[RECMETRICS_MAX_K];
    double ndcg_sum[RECMETRICS_MAX_K];
    long n_users;                // users counted (non-empty targets)
} RecMetrics;

// ks: n_k cutoffs (each >= 1), e.g. {1, 5, 10, 20}.
void recmetrics_init(RecMetrics *m, const int *ks, int n_k);
// One user's figures: recall[i], ndcg[i] for ks[i] (either may be NULL).
// Returns 0 for a user without targets (nothing written), else 1.
int recmetrics_user(double *recall, double *ndcg, const RecMetrics *m, const char *const *ranked, int n_ranked,
                    const char *const *targets, int n_targets);
// Adds one user to the sums; returns 1 if counted, 0 if skipped (no targets).
int recmetrics_add(RecMetrics *m, const char *const *ranked, int n_ranked, const char *const *targets, int n_targets);
double recmetrics_recall(const RecMetrics *m, int i); // mean over counted users (0 if none)
double recmetrics_ndcg(const RecMetrics *m, int i);
// The same by cutoff K (one of ks; any other K is a programming error and stops).
double recmetrics_recall_at(const RecMetrics *m, int K);
double recmetrics_ndcg_at(const RecMetrics *m, int K);

#endif
