// mostpop.h: the MostPop baseline. Items ranked by how often they occur in
// every split before the evaluated one (DESIGN.md "Metrics": train + valid
// when scoring test, train when scoring valid; ties: smaller item id first),
// then reduced to distinct codes:
// a code appears once, at the rank of its most popular item, since metrics
// compare codes (a colliding code stands for every item sharing it).
#ifndef EARNEST_MOSTPOP_H
#define EARNEST_MOSTPOP_H

#include <stddef.h>

#include "datasets/dataset.h"

typedef struct {
    int n;          // distinct codes ranked
    int *items;     // [n] the item that put each code in the ranking (its most popular one)
    int *counts;    // [n] that item's interaction count before the evaluated split
} MostPop;

// evaluated: the split being scored (SPLIT_VALID or SPLIT_TEST); popularity
// counts every interaction of the splits before it.
void mostpop_build(MostPop *m, const Dataset *d, Split evaluated);
void mostpop_free(MostPop *m);

#endif
