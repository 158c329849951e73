// test_trie.c: the item-code trie against brute force over all codes: allowed
// next tokens after every item prefix (and prefixes no item has), items per
// full code (collisions), node counts, and the vocabulary-based build.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "datasets/dataset.h"
#include "datasets/prompt.h"
#include "runtime/trie.h"
#include "datasets/vocab.h"

// Token id of index i at level j: scattered (not sorted by index) and distinct.
static int tok_of(int j, int i) { return 1000 * j + (i * 37) % 97 + 5; }

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

// Brute force: sorted distinct tokens at position l over items matching prefix[0..l).
static int brute_next(int *out, const int *codes, int n_items, int levels, const int *prefix, int l) {
    int n = 0;
    for (int it = 1; it <= n_items; it++) {
        const int *c = codes + (size_t)it * (size_t)levels;
        if (memcmp(c, prefix, (size_t)l * sizeof(int)) != 0) continue;
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= out[k] == c[l];
        if (!dup) out[n++] = c[l];
    }
    qsort(out, (size_t)n, sizeof(int), cmp_int);
    return n;
}

static void check_random(uint64_t seed, int n_items, int levels, const int *codes_per_level) {
    Rng r;
    rng_seed(&r, seed);
    int *codes = xmalloc((size_t)(n_items + 1) * (size_t)levels * sizeof(int));
    for (int j = 0; j < levels; j++) codes[j] = -1;
    for (int it = 1; it <= n_items; it++)
        for (int j = 0; j < levels; j++)
            codes[(size_t)it * (size_t)levels + (size_t)j] = tok_of(j, (int)(rng_u64(&r) % (uint64_t)codes_per_level[j]));
    Trie t;
    trie_build(&t, codes, n_items, levels);
    int *want = xmalloc(((size_t)n_items + 100) * sizeof(int));
    // Node count: root + distinct prefixes of each length 1..levels.
    int n_nodes = 1;
    for (int l = 1; l <= levels; l++)
        for (int it = 1; it <= n_items; it++) {
            int first = 1;
            for (int o = 1; o < it && first; o++)
                first = memcmp(codes + (size_t)o * (size_t)levels, codes + (size_t)it * (size_t)levels,
                               (size_t)l * sizeof(int)) != 0;
            n_nodes += first;
        }
    assert_int_equal(t.n_nodes, n_nodes);
    for (int it = 1; it <= n_items; it++) {
        const int *c = codes + (size_t)it * (size_t)levels;
        int node = 0;
        for (int l = 0; l < levels; l++) {
            const int *got;
            int n = trie_next(&got, &t, c, l);
            int nw = brute_next(want, codes, n_items, levels, c, l);
            assert_int_equal(n, nw);
            assert_memory_equal(got, want, (size_t)nw * sizeof(int));
            // The node API gives the same slice.
            const int *got2;
            assert_int_equal(trie_children(&got2, &t, node), nw);
            assert_ptr_equal(got2, got);
            node = trie_child(&t, node, c[l]);
            assert_true(node > 0);
            // A token not allowed here leads nowhere.
            assert_int_equal(trie_child(&t, node, -7), -1);
        }
        const int *none;
        assert_int_equal(trie_next(&none, &t, c, levels), 0);   // a full code has no continuation
        // Items with exactly this code, ascending.
        const int *items;
        int n = trie_items(&items, &t, c);
        int nw = 0;
        for (int o = 1; o <= n_items; o++)
            if (!memcmp(codes + (size_t)o * (size_t)levels, c, (size_t)levels * sizeof(int))) want[nw++] = o;
        assert_int_equal(n, nw);
        assert_memory_equal(items, want, (size_t)nw * sizeof(int));
    }
    // Random prefixes, most of which no item has.
    for (int trial = 0; trial < 2000; trial++) {
        int prefix[8];
        int l = (int)(rng_u64(&r) % (uint64_t)levels);
        for (int j = 0; j < l; j++) prefix[j] = tok_of(j, (int)(rng_u64(&r) % (uint64_t)(codes_per_level[j] + 1)));
        const int *got;
        int n = trie_next(&got, &t, prefix, l);
        int nw = brute_next(want, codes, n_items, levels, prefix, l);
        assert_int_equal(n, nw);
        if (nw) assert_memory_equal(got, want, (size_t)nw * sizeof(int));
        for (int j = l; j < levels; j++) prefix[j] = tok_of(j, (int)(rng_u64(&r) % (uint64_t)codes_per_level[j]));
        const int *items;
        int ni = trie_items(&items, &t, prefix);
        int nwi = 0;
        for (int o = 1; o <= n_items; o++)
            if (!memcmp(codes + (size_t)o * (size_t)levels, prefix, (size_t)levels * sizeof(int))) want[nwi++] = o;
        assert_int_equal(ni, nwi);
        if (nwi) assert_memory_equal(items, want, (size_t)nwi * sizeof(int));
    }
    const int *got;
    assert_int_equal(trie_next(&got, &t, NULL, -1), 0);
    trie_free(&t);
    free(want);
    free(codes);
}

static void test_trie_dense_collisions(void **state) {
    (void)state;
    check_random(1, 300, 3, (int[]){4, 3, 5});   // 60 codes for 300 items: heavy collisions
}

static void test_trie_sparse(void **state) {
    (void)state;
    check_random(2, 1500, 4, (int[]){20, 20, 20, 20});
}

static void test_trie_small_shapes(void **state) {
    (void)state;
    check_random(3, 50, 1, (int[]){7});
    check_random(4, 1, 4, (int[]){3, 3, 3, 3});
    check_random(5, 200, 2, (int[]){1, 90});
    // No items: only the root, nothing allowed.
    Trie t;
    int codes[2] = {-1, -1};
    trie_build(&t, codes, 0, 2);
    const int *got;
    assert_int_equal(t.n_nodes, 1);
    assert_int_equal(trie_next(&got, &t, NULL, 0), 0);
    assert_int_equal(trie_items(&got, &t, (int[]){1, 2}), 0);
    trie_free(&t);
}

// Through the vocabulary, as decoding uses it: items 1 and 4 share a code.
static void test_trie_from_vocab(void **state) {
    (void)state;
    static int codes[7][3] = {{-1, -1, -1}, {0, 1, 2}, {0, 1, 3}, {1, 0, 0}, {0, 1, 2}, {2, 3, 4}, {1, 2, 0}};
    Dataset d = {.n_users = 1, .n_items = 6, .code_levels = 3, .codes_per_level = {3, 4, 5}, .codes = &codes[0][0]};
    Vocab v;
    Error e;
    assert_int_equal(prompt_vocab_build(&v, &d, 2, 2, &e), 0);
    int tokens[7 * 3];
    assert_int_equal(vocab_item_tokens(tokens, &v, &d, &e), 0);
    Trie t;
    trie_build(&t, tokens, 6, 3);
    const int *got;
    int n = trie_next(&got, &t, NULL, 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) assert_int_equal(got[i], vocab_code_id(&v, 0, i));
    int pre[3] = {vocab_code_id(&v, 0, 0), vocab_code_id(&v, 1, 1), vocab_code_id(&v, 2, 2)};
    n = trie_next(&got, &t, pre, 2);   // after <a_0><b_1>: <c_2> (items 1, 4) and <c_3> (item 2)
    assert_int_equal(n, 2);
    assert_int_equal(got[0], vocab_code_id(&v, 2, 2));
    assert_int_equal(got[1], vocab_code_id(&v, 2, 3));
    n = trie_items(&got, &t, pre);
    assert_int_equal(n, 2);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 4);
    assert_int_equal(t.n_nodes, 1 + 3 + 4 + 5);   // a: 0,1,2; ab: 01,10,12,23; abc: 012,013,100,120,234
    trie_free(&t);
    vocab_free(&v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trie_dense_collisions),
        cmocka_unit_test(test_trie_sparse),
        cmocka_unit_test(test_trie_small_shapes),
        cmocka_unit_test(test_trie_from_vocab),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
