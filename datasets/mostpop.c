// mostpop.c: see mostpop.h.
#include "datasets/mostpop.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int item;
    int count;
} Pop;

static int cmp_pop(const void *a, const void *b) {
    const Pop *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

typedef struct {
    const int *codes;
    int levels;
} CodeCtx;

static int cmp_code(const void *a, const void *b, void *arg) {
    const CodeCtx *c = arg;
    int x = *(const int *)a, y = *(const int *)b;
    int r = memcmp(c->codes + (size_t)x * (size_t)c->levels, c->codes + (size_t)y * (size_t)c->levels,
                   (size_t)c->levels * sizeof(int));
    if (r) return r;
    return (x > y) - (x < y);
}

void mostpop_build(MostPop *m, const Dataset *d, Split evaluated) {
    CHECK(evaluated == SPLIT_VALID || evaluated == SPLIT_TEST, "mostpop_build: split %d is not valid or test", evaluated);
    memset(m, 0, sizeof *m);
    size_t n = (size_t)d->n_items;
    Pop *pop = xmalloc((n + 1) * sizeof(Pop));
    for (size_t i = 0; i < n; i++) pop[i] = (Pop){(int)i + 1, 0};
    for (int s = SPLIT_TRAIN; s < (int)evaluated; s++) {
        const DatasetSplit *sp = &d->splits[s];
        for (size_t k = 0; k < sp->offsets[d->n_users]; k++) pop[sp->items[k] - 1].count++;
    }
    qsort(pop, n, sizeof(Pop), cmp_pop);

    // Each item's code class: the smallest item id with the same code (found by
    // sorting ids by code; any order that groups equal codes would do).
    int *by_code = xmalloc((n + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++) by_code[i] = (int)i + 1;
    CodeCtx ctx = {d->codes, d->code_levels};
    qsort_r(by_code, n, sizeof(int), cmp_code, &ctx);
    int *cls = xmalloc((n + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        int same = i > 0 && !memcmp(d->codes + (size_t)by_code[i] * (size_t)d->code_levels,
                                    d->codes + (size_t)by_code[i - 1] * (size_t)d->code_levels,
                                    (size_t)d->code_levels * sizeof(int));
        cls[by_code[i]] = same ? cls[by_code[i - 1]] : by_code[i];
    }
    char *seen = xcalloc(n + 1, 1);
    m->items = xmalloc((n + 1) * sizeof(int));
    m->counts = xmalloc((n + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        int c = cls[pop[i].item];
        if (seen[c]) continue;
        seen[c] = 1;
        m->items[m->n] = pop[i].item;
        m->counts[m->n] = pop[i].count;
        m->n++;
    }
    free(seen);
    free(cls);
    free(by_code);
    free(pop);
}

void mostpop_free(MostPop *m) {
    free(m->items);
    free(m->counts);
    memset(m, 0, sizeof *m);
}
