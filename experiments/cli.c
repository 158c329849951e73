// cli.c: see cli.h.
#include "experiments/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int has_range(const CliFlag *f) { return f->lo != 0 || f->hi != 0; }

static const char *type_meta(const CliFlag *f) {
    if (f->meta) return f->meta;
    switch (f->type) {
    case CLI_INT: return "N";
    case CLI_FLOAT:
    case CLI_DOUBLE: return "X";
    case CLI_INT_LIST: return f->sep == ' ' ? "\"N N ...\"" : "N,N,...";
    case CLI_FLAG: return "";
    case CLI_STRINGS: return f->meta ? f->meta : "VALUE";
    default: return f->choices ? f->choices : "VALUE";
    }
}

static int usage_error(const CliSpec *spec, const char *flag, const char *fmt, const char *value) {
    fprintf(stderr, "earnest %s: ", spec->verb);
    if (flag) fprintf(stderr, "%s: ", flag);
    fprintf(stderr, fmt, value);
    fprintf(stderr, " (earnest %s --help)\n", spec->verb);
    return 2;
}

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int in_range(const CliFlag *f, double v) { return !has_range(f) || (v >= f->lo && v <= f->hi); }

static int range_error(const CliSpec *spec, const CliFlag *f, const char *what, const char *value) {
    char fmt[256];
    if (has_range(f)) snprintf(fmt, sizeof fmt, "'%%s' is not %s in [%.10g, %.10g]", what, f->lo, f->hi);
    else snprintf(fmt, sizeof fmt, "'%%s' is not %s", what);
    return usage_error(spec, f->name, fmt, value);
}

static int choice_ok(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *c = choices; *c;) {
        size_t len = strcspn(c, "|");
        if (len == n && !strncmp(c, v, n)) return 1;
        c += len + (c[len] == '|');
    }
    return 0;
}

static int parse_list(const CliSpec *spec, const CliFlag *f, const char *s) {
    CliIntList *out = f->dst;
    char sep = f->sep ? f->sep : ',';
    int cap = 16, n = 0;
    int *v = xmalloc((size_t)cap * sizeof(int));
    for (const char *p = s;;) {
        while (sep == ' ' && *p == ' ') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != sep) || !in_range(f, (double)x) || x < -2147483647L ||
            x > 2147483647L) {
            free(v);
            char fmt[256];
            if (has_range(f)) snprintf(fmt, sizeof fmt, "item %d of '%%s' is not an integer in [%.10g, %.10g]", n + 1, f->lo, f->hi);
            else snprintf(fmt, sizeof fmt, "item %d of '%%s' is not an integer", n + 1);
            return usage_error(spec, f->name, fmt, s);
        }
        if (n == cap) v = xrealloc(v, (size_t)(cap *= 2) * sizeof(int));
        v[n++] = (int)x;
        p = end + (*end == sep);
    }
    if (n == 0) {
        free(v);
        return usage_error(spec, f->name, "empty list '%s'", s);
    }
    out->v = v; // the default it replaces is the caller's (never freed here)
    out->n = n;
    return 0;
}

// Stores one flag's value; returns 0 or the exit status 2.
static int store(const CliSpec *spec, const CliFlag *f, const char *v) {
    switch (f->type) {
    case CLI_STRING:
        if (f->choices && !choice_ok(f->choices, v)) { // "--method: unknown method 'x' (known: a, b)"
            char fmt[512];
            size_t at = (size_t)snprintf(fmt, sizeof fmt, "unknown %s '%%s' (known: ", f->name + 2);
            for (const char *c = f->choices; *c && at + 3 < sizeof fmt; c++)
                at += (size_t)snprintf(fmt + at, sizeof fmt - at, *c == '|' ? ", " : "%c", *c);
            snprintf(fmt + at, sizeof fmt - at, ")");
            return usage_error(spec, f->name, fmt, v);
        }
        *(const char **)f->dst = v;
        return 0;
    case CLI_INT: {
        long x;
        if (parse_long(v, &x) || !in_range(f, (double)x) || x < -2147483647L || x > 2147483647L)
            return range_error(spec, f, "an integer", v);
        *(int *)f->dst = (int)x;
        return 0;
    }
    case CLI_FLOAT:
    case CLI_DOUBLE: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || !in_range(f, x)) return range_error(spec, f, "a finite number", v);
        if (f->type == CLI_FLOAT) *(float *)f->dst = (float)x;
        else *(double *)f->dst = x;
        return 0;
    }
    case CLI_INT_LIST: return parse_list(spec, f, v);
    case CLI_STRINGS: {
        CliStrings *l = f->dst;
        int max = f->hi > 0 ? (int)f->hi : 256;
        if (l->n >= max) {
            char fmt[64];
            snprintf(fmt, sizeof fmt, "given more than %d times%%s", max);
            return usage_error(spec, f->name, fmt, "");
        }
        l->v = xrealloc(l->v, (size_t)(l->n + 1) * sizeof(char *));
        l->v[l->n++] = v;
        return 0;
    }
    case CLI_FLAG: *(int *)f->dst = 1; return 0;
    }
    DIE("cli: flag %s has no type", f->name);
}

static int find_flag(const CliSpec *spec, const char *name) {
    for (int i = 0; i < spec->n_flags; i++)
        if (!strcmp(spec->flags[i].name, name)) return i;
    return -1;
}

static int parse_argv(CliSpec *spec, int argc, char **argv) {
    CHECK(spec->n_flags <= CLI_MAX_FLAGS, "cli: verb %s declares %d flags (at most %d)", spec->verb, spec->n_flags,
          CLI_MAX_FLAGS);
    memset(spec->given, 0, sizeof spec->given);
    if (spec->n_args) *spec->n_args = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            cli_usage(stdout, spec);
            return 0;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) { // "-" names standard input/output where a verb allows it
            if (!spec->n_args || *spec->n_args >= spec->max_args)
                return usage_error(spec, NULL, spec->max_args ? "unexpected argument '%s'" :
                                   "unexpected argument '%s' (this verb takes only flags)", a);
            spec->args[(*spec->n_args)++] = a;
            continue;
        }
        int k = find_flag(spec, a);
        if (k < 0) return usage_error(spec, NULL, "unknown option '%s'", a);
        const CliFlag *f = &spec->flags[k];
        // A flag given again replaces its earlier value (scripts append overrides), but CLI_STRINGS collects.
        if (spec->given[k] && f->type == CLI_INT_LIST) {
            free(((CliIntList *)f->dst)->v);
            *(CliIntList *)f->dst = (CliIntList){0};
        }
        if (f->type != CLI_FLAG) {
            if (i + 1 >= argc) return usage_error(spec, f->name, "needs a value (%s)", type_meta(f));
            if (store(spec, f, argv[++i])) return 2;
        } else {
            *(int *)f->dst = 1;
        }
        spec->given[k] = 1; // only now: cli_free releases what was stored
    }
    for (int k = 0; k < spec->n_flags; k++)
        if (spec->flags[k].required && !spec->given[k])
            return usage_error(spec, NULL, "%s is required", spec->flags[k].name);
    if (spec->n_args && *spec->n_args < spec->min_args)
        return usage_error(spec, NULL, "missing %s", spec->args_meta ? spec->args_meta : "argument");
    return -1;
}

// The default a flag shows in the usage: the variable's value before parsing.
static void default_text(char *out, size_t n, const CliFlag *f) {
    out[0] = 0;
    switch (f->type) {
    case CLI_STRING: {
        const char *s = *(const char **)f->dst;
        if (s) snprintf(out, n, "%s", s);
        break;
    }
    case CLI_INT: // a value outside the range (0 for "--threads 1..") means "not set": nothing to show
        if (in_range(f, (double)*(int *)f->dst)) snprintf(out, n, "%d", *(int *)f->dst);
        break;
    case CLI_FLOAT: snprintf(out, n, "%g", (double)*(float *)f->dst); break;
    case CLI_DOUBLE: snprintf(out, n, "%g", *(double *)f->dst); break;
    case CLI_INT_LIST: {
        const CliIntList *l = f->dst;
        size_t at = 0;
        for (int i = 0; i < l->n && at + 16 < n; i++)
            at += (size_t)snprintf(out + at, n - at, "%s%d", i ? "," : "", l->v[i]);
        break;
    }
    case CLI_STRINGS:
    case CLI_FLAG: break;
    }
}

int cli_parse(CliSpec *spec, int argc, char **argv) {
    int rc = parse_argv(spec, argc, argv);
    if (rc >= 0) cli_free(spec); // the verb stops here: nothing of the parse outlives it
    return rc;
}

void cli_usage(FILE *f, const CliSpec *spec) {
    fprintf(f, "usage: earnest %s %s\n", spec->verb, spec->synopsis ? spec->synopsis : "[options]");
    if (spec->about) fprintf(f, "%s", spec->about);
    if (spec->n_flags) fprintf(f, "options:\n");
    for (int k = 0; k < spec->n_flags; k++) {
        const CliFlag *fl = &spec->flags[k];
        char head[96], def[128];
        snprintf(head, sizeof head, "%s %s", fl->name, fl->type == CLI_FLAG ? "" : type_meta(fl));
        default_text(def, sizeof def, fl);
        fprintf(f, "  %-24s ", head);
        if (strlen(head) > 24) fprintf(f, "\n  %-24s ", "");
        for (const char *h = fl->help ? fl->help : ""; *h; h++) {
            fputc(*h, f);
            if (*h == '\n') fprintf(f, "  %-24s ", "");
        }
        if (fl->required) fprintf(f, " (required)");
        else if (def[0] && fl->type != CLI_FLAG) fprintf(f, " (default %s)", def);
        fputc('\n', f);
    }
}

void cli_free(const CliSpec *spec) {
    for (int k = 0; k < spec->n_flags; k++)
        if (!spec->given[k]) continue; // a default list belongs to the caller
        else if (spec->flags[k].type == CLI_INT_LIST) {
            CliIntList *l = spec->flags[k].dst;
            free(l->v);
            *l = (CliIntList){0};
        } else if (spec->flags[k].type == CLI_STRINGS) {
            CliStrings *l = spec->flags[k].dst;
            free(l->v);
            *l = (CliStrings){0};
        }
}

int cli_given(const CliSpec *spec, const char *name) {
    int k = find_flag(spec, name);
    CHECK(k >= 0, "cli_given: verb %s has no flag %s", spec->verb, name);
    return spec->given[k];
}

int cli_fail(const char *verb, const Error *e) {
    fprintf(stderr, "earnest %s: %s\n", verb, e->msg);
    return 1;
}
