// mostpop.h: the MostPop baseline. Items ranked by how often they occur in the
// train split (ties: smaller item id first), then reduced to distinct codes:
// a code appears once, at the rank of its most popular item, since metrics
// compare codes (a colliding code stands for every item sharing it).
#ifndef EARNEST_MOSTPOP_H
#define EARNEST_MOSTPOP_H

#include <stddef.h>

#include "datasets/dataset.h"

typedef struct {
    int n;          // distinct codes ranked
    int *items;     // [n] the item that put each code in the ranking (its most popular one)
    int *counts;    // [n] that item's train count
} MostPop;

void mostpop_build(MostPop *m, const Dataset *d);
void mostpop_free(MostPop *m);

#endif
