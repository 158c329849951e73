// trie.h: the prefix tree of all item codes, over vocabulary token ids, for
// constrained decoding: after a prefix of code tokens, which tokens may come
// next. Items whose codes collide share one path; the leaf lists them all.
//
// Nodes are numbered breadth-first (root = 0, then depth 1, ...), and each
// node's children are contiguous and sorted by token, so a node's allowed
// next tokens are one slice of edge_token.
#ifndef EARNEST_TRIE_H
#define EARNEST_TRIE_H

#include "runtime/util.h"

typedef struct {
    int levels;        // code length
    int n_nodes;
    int *depth_start;  // [levels + 2] nodes of depth l are depth_start[l] .. depth_start[l+1]
    int *first_edge;   // [n_nodes + 1] node x's edges are first_edge[x] .. first_edge[x+1]
    int *edge_token;   // [n_nodes - 1] sorted within each node; edge e leads to node e + 1
    int *leaf_first;   // [n_leaves + 1] leaf k (node depth_start[levels] + k) holds items
    int *leaf_items;   //   leaf_items[leaf_first[k] .. leaf_first[k+1]), ascending
} Trie;

// item_tokens: [(n_items + 1) * levels], item i's code token ids in row i
// (row 0 unused), as vocab_item_tokens fills it.
void trie_build(Trie *t, const int *item_tokens, int n_items, int levels);
void trie_free(Trie *t);

// Node API (beam search keeps one node per beam): -1 when absent.
int trie_child(const Trie *t, int node, int token);
// *tokens: the node's allowed next tokens, sorted; returns their count.
int trie_children(const int **tokens, const Trie *t, int node);
// Allowed next tokens after a prefix of n_prefix code tokens (0 for the first
// level): returns the count (0 for a prefix that is no item's, or a full code).
int trie_next(const int **allowed, const Trie *t, const int *prefix, int n_prefix);
// The items whose code is exactly `code` [levels]; returns the count (0 if none).
int trie_items(const int **items, const Trie *t, const int *code);

#endif
