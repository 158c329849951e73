// semantic_ids.h: semantic IDs for items, learned from the train sequences.
//
// 1. Embeddings (semid_embed): a symmetric co-occurrence count matrix over a
//    sliding window of each user's train sequence (pairs at distance 1..window,
//    self-pairs skipped), turned into positive PMI, then a rank-`dim` subspace by
//    randomized subspace iteration (sparse products, modified Gram-Schmidt). The
//    embedding of item i is row i of M Q (M the PPMI matrix, Q the subspace
//    basis): the rank-dim approximation of M's rows in the basis Q, which equals
//    U_r Lambda_r up to a rotation, and k-means is blind to rotations. Rows are
//    L2-normalised. Items with no positive-PMI context in train (above all items
//    seen only in valid/test) get a seeded random unit vector: their code then
//    carries no signal, only an identity.
// 2. Residual k-means (semid_quantize): `levels` levels; level l clusters the
//    residuals left by levels < l, each rescaled to unit length (so that a tight
//    group of items, whose residuals are tiny, is still split by their
//    directions instead of all falling into the cluster nearest the origin), into
//    k = min(codes, max(1, n_items / 16)) clusters (a small catalogue gets fewer,
//    fuller clusters); k-means++ initialisation from the seeded Rng, then `iters`
//    Lloyd iterations (distances via cblas_sgemm; an emptied cluster keeps its
//    previous centroid; ties go to the lower index).
// 3. A last level that separates collisions: items sharing the whole k-means code
//    get 0, 1, 2, ... in increasing item id; its size is the largest group.
// Deterministic for a seed and a thread count.
#ifndef EARNEST_SEMANTIC_IDS_H
#define EARNEST_SEMANTIC_IDS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int levels;      // k-means levels (the collision level comes on top)
    int codes;       // clusters per level at most
    int dim;         // embedding dimension
    int window;      // co-occurrence window (positions apart)
    int iters;       // Lloyd iterations per level
    int power_iters; // subspace iterations
    uint64_t seed;
} SemIdConfig;

void semid_config_default(SemIdConfig *c); // 3 levels x 256, dim 32, window 3, 20 + 6 iterations
// Returns 0 or -1 and a message in msg (n bytes) naming the bad field.
int semid_config_check(const SemIdConfig *c, char *msg, size_t n);

// The k-means cluster count used at every level for n_items items.
int semid_level_clusters(const SemIdConfig *c, int n_items);

// Item embeddings from train sequences in CSR form (user u: items[off[u]..off[u+1]),
// 1-based item ids in 1..n_items). emb: [n_items, dim], row i = item i+1.
void semid_embed(float *emb, const size_t *off, const int *items, int n_users, int n_items,
                 const SemIdConfig *c);

// k-means on x [n, d] with k clusters: assign [n] receives the cluster of each
// row, centroids [k, d]. Deterministic for an rng state.
void semid_kmeans(int *assign, float *centroids, const float *x, int n, int d, int k, int iters,
                  uint64_t seed);

// Residual k-means + collision level. codes: [n_items, levels + 1], row r for
// emb row r (item r + 1: a Dataset's codes + (levels + 1), past its unused row 0);
// codes_per_level: [levels + 1].
void semid_quantize(int *codes, int *codes_per_level, const float *emb, int n_items, int dim,
                    const SemIdConfig *c);

// The collision level alone: codes [n, levels + 1] with the first `levels`
// columns filled; fills the last column and returns its size (>= 1).
int semid_separate_collisions(int *codes, int n, int levels);

// Agreement of first-level codes with co-occurrence: over all pairs of
// positions (p, q), p < q <= p + window, of each sequence whose items differ
// (so a pair counts as often as it co-occurs), the fraction with the same
// first-level code; and the same fraction over all pairs of distinct items.
// later_from (NULL: every pair) counts only pairs whose later position q is at
// least later_from[u] in user u's sequence: with sequences = train + valid +
// test and later_from = the train length, only pairs reaching into held-out
// data count. codes: [(n_items + 1) * levels] indexed by item id, row 0 unused
// (a Dataset's codes).
typedef struct {
    double p_cooc, p_random, ratio;
    size_t n_pairs; // co-occurring pairs counted
} SemIdCheck;
void semid_check(SemIdCheck *out, const int *codes, int levels, const size_t *off, const int *items,
                 const size_t *later_from, int n_users, int n_items, int window);

#endif
