// cli.c: see cli.h.
#include "experiments/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "earnest %s: %s needs a value\n", argv[0], argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cli_int(const char *verb, const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "earnest %s: %s: '%s' is not an integer in [%ld, %ld]\n", verb, flag, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_float(const char *verb, const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) {
        fprintf(stderr, "earnest %s: %s: '%s' is not a number\n", verb, flag, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_int_list(const char *verb, const char *flag, const char *s, long lo, long hi, int **out, int spaces) {
    size_t cap = 16, n = 0;
    int *v = xmalloc(cap * sizeof(int));
    const char *p = s;
    char sep = spaces ? ' ' : ',';
    for (;;) {
        while (spaces && *p == ' ') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != sep) || x < lo || x > hi) {
            fprintf(stderr, "earnest %s: %s: item %zu of '%s' is not an integer in [%ld, %ld]\n", verb, flag, n + 1, s,
                    lo, hi);
            free(v);
            return -1;
        }
        if (n == cap) v = xrealloc(v, (cap *= 2) * sizeof(int));
        v[n++] = (int)x;
        p = end;
        if (*p == sep) p++;
    }
    if (n == 0) {
        fprintf(stderr, "earnest %s: %s: empty list\n", verb, flag);
        free(v);
        return -1;
    }
    *out = v;
    return (int)n;
}

int cli_fail(const char *verb, const Error *e) {
    fprintf(stderr, "earnest %s: %s\n", verb, e->msg);
    return 1;
}
