// trie.c: see trie.h. Built from the codes sorted lexicographically: in that
// order the distinct prefixes of each length appear in breadth-first order,
// so nodes, edges and leaves come out as CSR arrays in one sweep per level.
#include "runtime/trie.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const int *tokens;
    int levels;
} SortCtx;

// Orders item ids by code (lexicographic over token ids). glibc's qsort_r
// (the build defines _GNU_SOURCE) carries the context without globals.
static int cmp_items(const void *a, const void *b, void *arg) {
    const SortCtx *c = arg;
    int x = *(const int *)a, y = *(const int *)b;
    const int *cx = c->tokens + (size_t)x * (size_t)c->levels, *cy = c->tokens + (size_t)y * (size_t)c->levels;
    for (int j = 0; j < c->levels; j++)
        if (cx[j] != cy[j]) return cx[j] < cy[j] ? -1 : 1;
    return (x > y) - (x < y);   // ties: by item id, so leaves list items ascending
}

static int same_prefix(const int *tokens, int levels, int x, int y, int len) {
    return !memcmp(tokens + (size_t)x * (size_t)levels, tokens + (size_t)y * (size_t)levels,
                   (size_t)len * sizeof(int));
}

void trie_build(Trie *t, const int *item_tokens, int n_items, int levels) {
    memset(t, 0, sizeof *t);
    CHECK(levels >= 1 && n_items >= 0, "trie_build: bad sizes");
    t->levels = levels;
    size_t n = (size_t)n_items;
    int *order = xmalloc((n + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++) order[i] = (int)i + 1;
    SortCtx ctx = {item_tokens, levels};
    qsort_r(order, n, sizeof(int), cmp_items, &ctx);

    // At most 1 + levels * n nodes; trimmed below.
    size_t cap = 1 + (size_t)levels * n;
    int *parent = xmalloc(cap * sizeof(int));
    t->edge_token = xmalloc(cap * sizeof(int));
    t->depth_start = xmalloc((size_t)(levels + 2) * sizeof(int));
    int *node_of = xmalloc((n + 1) * sizeof(int));   // per sorted position: its node at the current depth
    for (size_t i = 0; i < n; i++) node_of[i] = 0;
    int n_nodes = 1;
    t->depth_start[0] = 0;
    t->depth_start[1] = 1;
    for (int l = 0; l < levels; l++) {
        for (size_t i = 0; i < n; i++) {
            int item = order[i];
            if (i == 0 || !same_prefix(item_tokens, levels, order[i - 1], item, l + 1)) {
                parent[n_nodes] = node_of[i];
                t->edge_token[n_nodes - 1] = item_tokens[(size_t)item * (size_t)levels + (size_t)l];
                n_nodes++;
            }
            node_of[i] = n_nodes - 1;
        }
        t->depth_start[l + 2] = n_nodes;
    }
    t->n_nodes = n_nodes;
    // Edges were appended in parent order (breadth-first), so counting gives CSR offsets.
    t->first_edge = xcalloc((size_t)n_nodes + 1, sizeof(int));
    for (int x = 1; x < n_nodes; x++) t->first_edge[parent[x] + 1]++;
    for (int x = 0; x < n_nodes; x++) t->first_edge[x + 1] += t->first_edge[x];
    // Leaves: the sorted items grouped by full code.
    int first_leaf = t->depth_start[levels];
    int n_leaves = n_nodes - first_leaf;
    t->leaf_first = xcalloc((size_t)n_leaves + 1, sizeof(int));
    t->leaf_items = xmalloc((n + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        t->leaf_items[i] = order[i];
        t->leaf_first[node_of[i] - first_leaf + 1]++;
    }
    for (int k = 0; k < n_leaves; k++) t->leaf_first[k + 1] += t->leaf_first[k];
    free(parent);
    free(node_of);
    free(order);
}

void trie_free(Trie *t) {
    free(t->depth_start);
    free(t->first_edge);
    free(t->edge_token);
    free(t->leaf_first);
    free(t->leaf_items);
    memset(t, 0, sizeof *t);
}

int trie_children(const int **tokens, const Trie *t, int node) {
    if (node < 0 || node >= t->n_nodes) { *tokens = NULL; return 0; }
    *tokens = t->edge_token + t->first_edge[node];
    return t->first_edge[node + 1] - t->first_edge[node];
}

int trie_child(const Trie *t, int node, int token) {
    if (node < 0 || node >= t->n_nodes) return -1;
    int lo = t->first_edge[node], hi = t->first_edge[node + 1];   // binary search in [lo, hi)
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (t->edge_token[mid] < token) lo = mid + 1;
        else hi = mid;
    }
    return (lo < t->first_edge[node + 1] && t->edge_token[lo] == token) ? lo + 1 : -1;
}

static int walk(const Trie *t, const int *prefix, int n_prefix) {
    int node = 0;
    for (int i = 0; i < n_prefix && node >= 0; i++) node = trie_child(t, node, prefix[i]);
    return node;
}

int trie_next(const int **allowed, const Trie *t, const int *prefix, int n_prefix) {
    *allowed = NULL;
    if (n_prefix < 0 || n_prefix >= t->levels) return 0;
    int node = walk(t, prefix, n_prefix);
    if (node < 0) return 0;
    return trie_children(allowed, t, node);
}

int trie_items(const int **items, const Trie *t, const int *code) {
    *items = NULL;
    int node = walk(t, code, t->levels);
    if (node < 0) return 0;
    int k = node - t->depth_start[t->levels];
    *items = t->leaf_items + t->leaf_first[k];
    return t->leaf_first[k + 1] - t->leaf_first[k];
}
