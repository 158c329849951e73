// prep_raw.c: raw interaction logs (Amazon 5-core JSON lines, MovieLens
// ratings.dat) and the global-time split. See prepare.h for the pipeline.
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "datasets/prepare.h"

// ---- name -> index tables (open addressing, FNV-1a) ---------------------------

typedef struct {
    char **names; // [n] in order of first appearance
    int n, cap_names;
    int *slots;   // [n_slots]: index + 1, 0 = empty
    size_t n_slots;
} NameTable;

typedef struct {
    NameTable users, items;
} RawNames;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void table_grow(NameTable *t) {
    size_t n_slots = t->n_slots ? t->n_slots * 2 : 1024;
    int *slots = xcalloc(n_slots, sizeof *slots);
    for (int i = 0; i < t->n; i++) {
        size_t h = (size_t)(fnv1a(t->names[i], strlen(t->names[i])) & (n_slots - 1));
        while (slots[h]) h = (h + 1) & (n_slots - 1);
        slots[h] = i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->n_slots = n_slots;
}

// Index of name s[0..n) in t, added at the end when new. -1 when the table is full.
static int table_intern(NameTable *t, const char *s, size_t n) {
    if ((size_t)(t->n + 1) * 2 > t->n_slots) table_grow(t);
    size_t h = (size_t)(fnv1a(s, n) & (t->n_slots - 1));
    while (t->slots[h]) {
        const char *name = t->names[t->slots[h] - 1];
        if (strlen(name) == n && memcmp(name, s, n) == 0) return t->slots[h] - 1;
        h = (h + 1) & (t->n_slots - 1);
    }
    if (t->n >= DATASET_MAX_IDS) return -1;
    if (t->n == t->cap_names) {
        t->cap_names = t->cap_names ? t->cap_names * 2 : 1024;
        t->names = xrealloc(t->names, (size_t)t->cap_names * sizeof *t->names);
    }
    char *copy = xmalloc(n + 1);
    memcpy(copy, s, n);
    copy[n] = 0;
    t->names[t->n] = copy;
    t->slots[h] = ++t->n;
    return t->n - 1;
}

static void table_free(NameTable *t) {
    for (int i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

// ---- the log -------------------------------------------------------------------

void raw_log_init(RawLog *log) { memset(log, 0, sizeof *log); }

void raw_log_free(RawLog *log) {
    RawNames *names = log->names;
    if (names) {
        table_free(&names->users);
        table_free(&names->items);
        free(names);
    }
    free(log->ev);
    memset(log, 0, sizeof *log);
}

void raw_log_push(RawLog *log, int user, int item, int64_t ts) {
    if (log->n == log->cap) {
        log->cap = log->cap ? log->cap * 2 : 4096;
        log->ev = xrealloc(log->ev, log->cap * sizeof *log->ev);
    }
    log->ev[log->n] = (RawEvent){.user = user, .item = item, .ts = ts, .order = log->n};
    log->n++;
    if (user + 1 > log->n_users) log->n_users = user + 1;
    if (item + 1 > log->n_items) log->n_items = item + 1;
}

int raw_format_parse(const char *s, RawFormat *f) {
    if (!strcmp(s, "amazon")) *f = RAW_AMAZON;
    else if (!strcmp(s, "movielens")) *f = RAW_MOVIELENS;
    else return -1;
    return 0;
}

static int push_named(RawLog *log, const char *user, size_t nu, const char *item, size_t ni, int64_t ts,
                      const char *path, size_t line, Error *e) {
    if (!log->names) log->names = xcalloc(1, sizeof(RawNames));
    RawNames *names = log->names;
    int u = table_intern(&names->users, user, nu), i = table_intern(&names->items, item, ni);
    if (u < 0 || i < 0) return err_set(e, "%s:%zu: too many distinct users or items", path, line);
    raw_log_push(log, u, i, ts);
    return 0;
}

// ---- Amazon 5-core: {"reviewerID": "...", "asin": "...", "overall": 5.0, "unixReviewTime": 1234, ...}

static int amazon_line(RawLog *log, const char *s, size_t n, const char *path, size_t line, Error *e) {
    json_error_t jerr;
    json_t *root = json_loadb(s, n, 0, &jerr);
    if (!root) return err_set(e, "%s:%zu: invalid JSON: %s", path, line, jerr.text);
    json_t *user = json_object_get(root, "reviewerID"), *item = json_object_get(root, "asin");
    json_t *rating = json_object_get(root, "overall"), *ts = json_object_get(root, "unixReviewTime");
    int rc = -1;
    if (!json_is_object(root)) {
        err_set(e, "%s:%zu: expected a JSON object", path, line);
    } else if (!json_is_string(user) || json_string_length(user) == 0) {
        err_set(e, "%s:%zu: field \"reviewerID\" missing or not a non-empty string", path, line);
    } else if (!json_is_string(item) || json_string_length(item) == 0) {
        err_set(e, "%s:%zu: field \"asin\" missing or not a non-empty string", path, line);
    } else if (!json_is_number(rating) || !isfinite(json_number_value(rating))) {
        err_set(e, "%s:%zu: field \"overall\" missing or not a number", path, line);
    } else if (!json_is_integer(ts) || json_integer_value(ts) < 0) {
        err_set(e, "%s:%zu: field \"unixReviewTime\" missing or not a non-negative integer", path, line);
    } else if (json_number_value(rating) < 4.0) {
        log->n_low_rating++;
        rc = 0;
    } else {
        rc = push_named(log, json_string_value(user), json_string_length(user), json_string_value(item),
                        json_string_length(item), (int64_t)json_integer_value(ts), path, line, e);
    }
    json_decref(root);
    return rc;
}

// ---- MovieLens ratings.dat: user::item::rating::timestamp ------------------------

static int parse_int64(const char *s, size_t n, int64_t *out) {
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int movielens_line(RawLog *log, const char *s, size_t n, const char *path, size_t line, Error *e) {
    const char *field[4];
    size_t flen[4];
    int nf = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || (i + 1 < n && s[i] == ':' && s[i + 1] == ':')) {
            if (nf == 4) return err_set(e, "%s:%zu: more than 4 '::'-separated fields", path, line);
            field[nf] = s + start;
            flen[nf] = i - start;
            nf++;
            start = i + 2;
            i++;
        }
    }
    if (nf != 4) return err_set(e, "%s:%zu: expected user::item::rating::timestamp", path, line);
    int64_t user, item, ts;
    if (parse_int64(field[0], flen[0], &user) != 0 || user < 1 || user > DATASET_MAX_IDS)
        return err_set(e, "%s:%zu: user id '%.*s' is not an integer in 1..%d", path, line,
                       (int)(flen[0] > 40 ? 40 : flen[0]), field[0], DATASET_MAX_IDS);
    if (parse_int64(field[1], flen[1], &item) != 0 || item < 1 || item > DATASET_MAX_IDS)
        return err_set(e, "%s:%zu: item id '%.*s' is not an integer in 1..%d", path, line,
                       (int)(flen[1] > 40 ? 40 : flen[1]), field[1], DATASET_MAX_IDS);
    if (parse_int64(field[3], flen[3], &ts) != 0)
        return err_set(e, "%s:%zu: timestamp '%.*s' is not a non-negative integer", path, line,
                       (int)(flen[3] > 40 ? 40 : flen[3]), field[3]);
    char buf[32];
    if (flen[2] == 0 || flen[2] >= sizeof buf)
        return err_set(e, "%s:%zu: rating '%.*s' is not a number", path, line, (int)(flen[2] > 40 ? 40 : flen[2]),
                       field[2]);
    memcpy(buf, field[2], flen[2]);
    buf[flen[2]] = 0;
    char *end = NULL;
    errno = 0;
    double rating = strtod(buf, &end);
    if (end != buf + flen[2] || errno != 0 || !isfinite(rating))
        return err_set(e, "%s:%zu: rating '%s' is not a number", path, line, buf);
    if (rating < 4.0) {
        log->n_low_rating++;
        return 0;
    }
    char us[24], is[24];
    int nu = snprintf(us, sizeof us, "%" PRId64, user), ni = snprintf(is, sizeof is, "%" PRId64, item);
    return push_named(log, us, (size_t)nu, is, (size_t)ni, ts, path, line, e);
}

static int raw_line(RawLog *log, RawFormat fmt, const char *s, size_t n, const char *path, size_t line,
                    Error *e) {
    while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
    log->n_lines++;
    if (n == 0) return err_set(e, "%s:%zu: empty line", path, line);
    return fmt == RAW_AMAZON ? amazon_line(log, s, n, path, line, e) : movielens_line(log, s, n, path, line, e);
}

int raw_parse_buf(RawLog *log, RawFormat fmt, const char *buf, size_t len, const char *path, Error *e) {
    size_t pos = 0, line = 0;
    if (len == 0) return err_set(e, "%s: file is empty", path);
    while (pos < len) {
        size_t end = pos;
        while (end < len && buf[end] != '\n') end++;
        if (raw_line(log, fmt, buf + pos, end - pos, path, ++line, e) != 0) return -1;
        pos = end + 1;
    }
    return 0;
}

int raw_read_file(RawLog *log, RawFormat fmt, const char *path, Error *e) {
    FILE *probe = fopen(path, "rb"); // for a plain "cannot open" message with the reason
    if (!probe) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    fclose(probe);
    gzFile gz = gzopen(path, "rb"); // reads plain files too
    if (!gz) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, line = 0;
    char *buf = xmalloc(cap);
    int rc = 0;
    for (;;) {
        size_t n = 0;
        int got = 0;
        for (;;) { // one line, growing the buffer for long lines
            if (!gzgets(gz, buf + n, (int)(cap - n))) break;
            got = 1;
            n += strlen(buf + n);
            if (n > 0 && buf[n - 1] == '\n') break;
            if (n + 1 < cap) break; // end of file without a final newline
            buf = xrealloc(buf, cap *= 2);
        }
        int errnum = 0;
        const char *msg = gzerror(gz, &errnum);
        if (errnum != Z_OK && errnum != Z_STREAM_END) {
            rc = err_set(e, "%s: read error after line %zu: %s", path, line, msg);
            break;
        }
        if (!got) break;
        if (raw_line(log, fmt, buf, n, path, ++line, e) != 0) {
            rc = -1;
            break;
        }
    }
    free(buf);
    gzclose(gz);
    if (rc == 0 && line == 0) rc = err_set(e, "%s: file is empty", path);
    return rc;
}

// ---- the split ---------------------------------------------------------------------

static int cmp_event(const void *a, const void *b) {
    const RawEvent *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

int prep_split(Dataset *out, int **item_raw, const RawLog *log, Error *e) {
    memset(out, 0, sizeof *out);
    size_t n = log->n;
    if (n == 0) return err_set(e, "no interactions left (after dropping ratings below 4)");
    RawEvent *ev = xmalloc(n * sizeof *ev);
    memcpy(ev, log->ev, n * sizeof *ev);
    qsort(ev, n, sizeof *ev, cmp_event);
    // Global timeline 8:1:1 by interaction count.
    size_t bound[SPLIT_COUNT + 1] = {0, n * 8 / 10, n * 9 / 10, n};

    int *train_count = xcalloc((size_t)log->n_users + 1, sizeof *train_count);
    for (size_t t = 0; t < bound[1]; t++) train_count[ev[t].user]++;
    // Dense ids: users by first train interaction, items by first appearance in
    // the timeline (train, then valid, then test) among kept users.
    int *user_id = xcalloc((size_t)log->n_users + 1, sizeof *user_id);
    int *item_id = xcalloc((size_t)log->n_items + 1, sizeof *item_id);
    int n_users = 0, n_items = 0;
    for (size_t t = 0; t < bound[1]; t++)
        if (train_count[ev[t].user] >= 2 && !user_id[ev[t].user]) user_id[ev[t].user] = ++n_users;
    if (n_users == 0) {
        free(ev);
        free(train_count);
        free(user_id);
        free(item_id);
        return err_set(e, "no user has 2 or more train interactions (of %zu interactions kept)", n);
    }
    int *raw_of = xmalloc(((size_t)log->n_items + 1) * sizeof *raw_of); // [dense item id]; row 0 unused
    raw_of[0] = -1;
    for (size_t t = 0; t < n; t++)
        if (user_id[ev[t].user] && !item_id[ev[t].item]) {
            item_id[ev[t].item] = ++n_items;
            raw_of[n_items] = ev[t].item;
        }

    out->n_users = n_users;
    out->n_items = n_items;
    for (int k = 0; k < SPLIT_COUNT; k++) {
        size_t *off = xcalloc((size_t)n_users + 1, sizeof *off);
        for (size_t t = bound[k]; t < bound[k + 1]; t++)
            if (user_id[ev[t].user]) off[user_id[ev[t].user]]++;
        for (int u = 0; u < n_users; u++) off[u + 1] += off[u];
        int *items = xmalloc((off[n_users] ? off[n_users] : 1) * sizeof *items);
        size_t *fill = xmalloc((size_t)n_users * sizeof *fill);
        for (int u = 0; u < n_users; u++) fill[u] = off[u];
        for (size_t t = bound[k]; t < bound[k + 1]; t++) {
            int u = user_id[ev[t].user];
            if (u) items[fill[u - 1]++] = item_id[ev[t].item];
        }
        free(fill);
        out->splits[k].offsets = off;
        out->splits[k].items = items;
    }
    free(ev);
    free(train_count);
    free(user_id);
    free(item_id);
    if (item_raw) *item_raw = raw_of;
    else free(raw_of);
    return 0;
}
