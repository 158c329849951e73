// dataset.c: see dataset.h. The split and code files are parsed by hand (one
// pass over the bytes, no scanf) so that Games loads in milliseconds and every
// error can name file:line.
#include "datasets/dataset.h"

#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *SPLIT_NAMES[SPLIT_COUNT] = {"train", "valid", "test"};

const char *split_name(Split s) { return (s >= 0 && s < SPLIT_COUNT) ? SPLIT_NAMES[s] : "?"; }

int split_parse(const char *name, Split *s) {
    for (int i = 0; i < SPLIT_COUNT; i++)
        if (!strcmp(name, SPLIT_NAMES[i])) { *s = (Split)i; return 0; }
    return -1;
}

// ---- line scanning --------------------------------------------------------

// A cursor over one line [p, end) of a file, for messages: path and 1-based line.
typedef struct {
    const char *p, *end;
    const char *path;
    size_t line;
} Line;

static int is_blank(char c) { return c == ' ' || c == '\t'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads the next line from text[*pos..len) into ln (without "\n" or a final
// "\r"). Returns 0 at the end of the text.
static int line_next(Line *ln, const char *text, size_t len, size_t *pos) {
    if (*pos >= len) return 0;
    const char *s = text + *pos;
    const char *nl = memchr(s, '\n', len - *pos);
    const char *e = nl ? nl : text + len;
    *pos = (size_t)(e - text) + (nl ? 1 : 0);
    if (e > s && e[-1] == '\r') e--;   // tolerate CRLF files
    ln->p = s;
    ln->end = e;
    ln->line++;
    return 1;
}

// The length of the token at p to quote in messages: up to the next blank or
// the end, at most 24 chars; a lone blank is shown as itself.
static int token_len(const char *p, const char *end) {
    int n = 0;
    while (p + n < end && !is_blank(p[n]) && n < 24) n++;
    return (n == 0 && p < end) ? 1 : n;
}

// Parses a decimal id at ln->p (digits only, at least one) into *v and
// advances. Values beyond `max` are reported by the caller: the parse
// saturates at max + 1 so huge numbers cannot overflow.
static int parse_id(Line *ln, long long max, long long *v) {
    const char *p = ln->p;
    if (p >= ln->end || !is_digit(*p)) return -1;
    long long x = 0;
    while (p < ln->end && is_digit(*p)) {
        x = x * 10 + (*p - '0');
        if (x > max) x = max + 1;
        p++;
    }
    // A number must end at a blank or the end of the line ("12x" is not an id).
    if (p < ln->end && !is_blank(*p)) return -1;
    ln->p = p;
    *v = x;
    return 0;
}

// Makes room for `need` elements of `elem` bytes in p (capacity *cap, never
// beyond max): the per-user and per-item arrays grow with the lines actually
// read, so a meta.json size far beyond what the file holds costs nothing.
static void *grow(void *p, size_t *cap, size_t need, size_t max, size_t elem) {
    if (need <= *cap) return p;
    size_t c = *cap;
    while (c < need) c = c > max / 2 ? max : 2 * c;
    *cap = c;
    return xrealloc(p, c * elem);
}

// ---- splits ---------------------------------------------------------------

int dataset_parse_split(DatasetSplit *out, const char *text, size_t len, const char *path,
                        int n_users, int n_items, Error *e) {
    if (len == 0) return err_set(e, "%s: empty file (expected %d user lines)", path, n_users);
    size_t cap_u = 1024, max_u = (size_t)n_users + 1;
    if (cap_u > max_u) cap_u = max_u;
    size_t *offsets = xmalloc(cap_u * sizeof(size_t));
    size_t cap = 1024, n = 0;
    int *items = xmalloc(cap * sizeof(int));
    offsets[0] = 0;
    Line ln = {.path = path, .line = 0};
    size_t pos = 0;
    long long user = 0;
    while (line_next(&ln, text, len, &pos)) {
        if (ln.p == ln.end) { err_set(e, "%s:%zu: empty line", path, ln.line); goto fail; }
        if (user == n_users) {
            err_set(e, "%s:%zu: more user lines than meta.json n_users = %d", path, ln.line, n_users);
            goto fail;
        }
        long long uid;
        if (parse_id(&ln, DATASET_MAX_IDS, &uid) != 0) {
            err_set(e, "%s:%zu: expected a user id at the start of the line, found '%.*s'",
                    path, ln.line, token_len(ln.p, ln.end), ln.p);
            goto fail;
        }
        if (uid != user + 1) {
            err_set(e, "%s:%zu: user id %lld %s (expected %lld: one line per user 1..%d, in order)", path,
                    ln.line, uid, uid <= user ? "duplicated or out of order" : "out of order", user + 1, n_users);
            goto fail;
        }
        user = uid;
        for (;;) {
            while (ln.p < ln.end && is_blank(*ln.p)) ln.p++;
            if (ln.p == ln.end) break;
            long long item;
            const char *tok = ln.p;
            if (parse_id(&ln, n_items, &item) != 0) {
                err_set(e, "%s:%zu: expected an item id, found '%.*s'", path, ln.line,
                        token_len(ln.p, ln.end), ln.p);
                goto fail;
            }
            if (item < 1 || item > n_items) {
                err_set(e, "%s:%zu: item id %.*s out of range 1..%d (meta.json n_items)", path, ln.line,
                        token_len(tok, ln.end), tok, n_items);
                goto fail;
            }
            if (n == cap) {
                cap *= 2;
                items = xrealloc(items, cap * sizeof(int));
            }
            items[n++] = (int)item;
        }
        offsets = grow(offsets, &cap_u, (size_t)user + 1, max_u, sizeof *offsets);
        offsets[user] = n;
    }
    if (user != n_users) {
        err_set(e, "%s: %lld user lines, meta.json n_users is %d", path, user, n_users);
        goto fail;
    }
    out->offsets = offsets;
    out->items = items;
    return 0;
fail:
    free(offsets);
    free(items);
    return -1;
}

// ---- codes ----------------------------------------------------------------

CodeTokenStatus dataset_parse_code_token(const char *p, const char *end, int level, int n_codes, int *idx,
                                         const char **after) {
    char letter = (char)('a' + level);
    if (end - p < 5 || p[0] != '<' || p[1] != letter || p[2] != '_' || !is_digit(p[3]))
        return CODE_TOKEN_MALFORMED;
    p += 3;
    if (p[0] == '0' && p + 1 < end && is_digit(p[1])) return CODE_TOKEN_LEADING_ZERO;
    long long x = 0;
    while (p < end && is_digit(*p)) {
        x = x * 10 + (*p - '0');
        if (x > DATASET_MAX_CODES) x = DATASET_MAX_CODES + 1;
        p++;
    }
    if (p == end || *p != '>') return CODE_TOKEN_NO_CLOSE;
    *idx = (int)x;
    if (x >= n_codes) return CODE_TOKEN_RANGE;
    *after = p + 1;
    return CODE_TOKEN_OK;
}

// Parses one "<x_N>" token for level `level` at ln->p into *idx and advances;
// errors name file:line.
static int parse_code_token(Line *ln, int level, int n_codes, int *idx, Error *e) {
    char letter = (char)('a' + level);
    const char *after = NULL;
    int n = token_len(ln->p, ln->end);
    switch (dataset_parse_code_token(ln->p, ln->end, level, n_codes, idx, &after)) {
    case CODE_TOKEN_OK:
        ln->p = after;
        return 0;
    case CODE_TOKEN_MALFORMED:
        return err_set(e, "%s:%zu: malformed code token for level %d: expected '<%c_N>', found '%.*s'",
                       ln->path, ln->line, level, letter, n > 12 ? 12 : n, ln->p);
    case CODE_TOKEN_LEADING_ZERO:
        return err_set(e, "%s:%zu: code token for level %c has a leading zero", ln->path, ln->line, letter);
    case CODE_TOKEN_NO_CLOSE:
        return err_set(e, "%s:%zu: malformed code token for level %c: missing '>'", ln->path, ln->line, letter);
    case CODE_TOKEN_RANGE:
        break;
    }
    return err_set(e, "%s:%zu: code index %d out of range 0..%d for level %c (meta.json codes_per_level)",
                   ln->path, ln->line, *idx, n_codes - 1, letter);
}

int dataset_parse_codes(int **codes_out, const char *text, size_t len, const char *path,
                        int n_items, int code_levels, const int *codes_per_level, Error *e) {
    if (len == 0) return err_set(e, "%s: empty file (expected %d item lines)", path, n_items);
    size_t L = (size_t)code_levels, cap_rows = 1024, max_rows = (size_t)n_items + 1;
    if (cap_rows > max_rows) cap_rows = max_rows;
    int *codes = xmalloc(cap_rows * L * sizeof(int));
    for (size_t j = 0; j < L; j++) codes[j] = -1;  // row 0: no item 0
    Line ln = {.path = path, .line = 0};
    size_t pos = 0;
    long long item = 0;
    while (line_next(&ln, text, len, &pos)) {
        if (ln.p == ln.end) { err_set(e, "%s:%zu: empty line", path, ln.line); goto fail; }
        if (item == n_items) {
            err_set(e, "%s:%zu: more item lines than meta.json n_items = %d", path, ln.line, n_items);
            goto fail;
        }
        long long id;
        // The id ends at the TAB; parse_id stops at blanks, TAB included.
        if (parse_id(&ln, DATASET_MAX_IDS, &id) != 0) {
            err_set(e, "%s:%zu: expected an item id at the start of the line, found '%.*s'", path, ln.line,
                    token_len(ln.p, ln.end), ln.p);
            goto fail;
        }
        if (id != item + 1) {
            err_set(e, "%s:%zu: item id %lld %s (expected %lld: one line per item 1..%d, in order)", path,
                    ln.line, id, id <= item ? "duplicated or out of order" : "out of order (missing items)",
                    item + 1, n_items);
            goto fail;
        }
        item = id;
        codes = grow(codes, &cap_rows, (size_t)item + 1, max_rows, L * sizeof(int));
        if (ln.p == ln.end || *ln.p != '\t') {
            err_set(e, "%s:%zu: expected a TAB and the code after item id %lld", path, ln.line, id);
            goto fail;
        }
        ln.p++;
        int *row = codes + (size_t)item * L;
        for (int j = 0; j < code_levels; j++) {
            if (ln.p == ln.end) {
                err_set(e, "%s:%zu: code has %d tokens, expected %d (meta.json code_levels)", path, ln.line, j,
                        code_levels);
                goto fail;
            }
            if (parse_code_token(&ln, j, codes_per_level[j], &row[j], e) != 0) goto fail;
        }
        if (ln.p != ln.end) {
            if (*ln.p == '<')
                err_set(e, "%s:%zu: code has more than %d tokens (meta.json code_levels)", path, ln.line,
                        code_levels);
            else
                err_set(e, "%s:%zu: unexpected text after the code: '%.*s'", path, ln.line,
                        token_len(ln.p, ln.end), ln.p);
            goto fail;
        }
    }
    if (item != n_items) {
        err_set(e, "%s: codes for %lld items, meta.json n_items is %d (items %lld..%d have no code)", path, item,
                n_items, item + 1, n_items);
        goto fail;
    }
    *codes_out = codes;
    return 0;
fail:
    free(codes);
    return -1;
}

// ---- JSON -------------------------------------------------------------------

// The key of a duplicate-key error. jansson stops right after the key's closing
// quote (byte offset pos); the opening quote is the first '"' before it that no
// odd run of backslashes escapes. jansson decodes that string literal, so the
// message shows the key as spelt after unescaping. Returns 0 when found.
static int duplicate_key(char *out, size_t n, const char *text, size_t len, size_t pos) {
    if (pos < 2 || pos > len || text[pos - 1] != '"') return -1;
    size_t open = pos - 1;
    for (;;) {
        if (open == 0) return -1;
        open--;
        if (text[open] != '"') continue;
        size_t bs = 0;
        while (bs < open && text[open - 1 - bs] == '\\') bs++;
        if (bs % 2 == 0) break;
    }
    json_error_t je;
    json_t *k = json_loadb(text + open, pos - open, JSON_DECODE_ANY, &je);
    int rc = json_is_string(k) ? 0 : -1;
    if (rc == 0) snprintf(out, n, "%s", json_string_value(k));
    json_decref(k);
    return rc;
}

int dataset_json_parse(json_t **root, const char *text, size_t len, const char *path, Error *e) {
    json_error_t je;
    *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (*root) return 0;
    char key[256];
    if (json_error_code(&je) == json_error_duplicate_key &&
        duplicate_key(key, sizeof key, text, len, (size_t)je.position) == 0)
        return err_set(e, "%s:%d: duplicate key \"%s\" (a key may appear once per object; JSON readers "
                       "disagree on which value wins)", path, je.line, key);
    return err_set(e, "%s:%d: invalid JSON: %s", path, je.line, je.text);
}

// ---- meta.json ------------------------------------------------------------

// Integer field `key` in lo..hi. Returns 0 (set), 1 (absent and optional) or -1.
static int meta_int(const char *path, json_t *root, const char *key, long long lo, long long hi, int required,
                    long long *v, Error *e) {
    json_t *x = json_object_get(root, key);
    if (!x) {
        if (required) return err_set(e, "%s: missing field \"%s\"", path, key);
        return 1;
    }
    if (!json_is_integer(x)) return err_set(e, "%s: field \"%s\" must be an integer", path, key);
    long long y = json_integer_value(x);
    if (y < lo || y > hi) return err_set(e, "%s: field \"%s\" = %lld out of range %lld..%lld", path, key, y, lo, hi);
    *v = y;
    return 0;
}

// String field `key` into out[n]. Returns 0 (set), 1 (absent and optional: out = "") or -1.
static int meta_string(const char *path, json_t *root, const char *key, int required, char *out, size_t n,
                       Error *e) {
    json_t *x = json_object_get(root, key);
    if (!x) {
        if (required) return err_set(e, "%s: missing field \"%s\"", path, key);
        out[0] = 0;
        return 1;
    }
    if (!json_is_string(x)) return err_set(e, "%s: field \"%s\" must be a string", path, key);
    const char *s = json_string_value(x);
    if (strlen(s) >= n) return err_set(e, "%s: field \"%s\" longer than %zu bytes", path, key, n - 1);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int meta_codes_per_level(Dataset *d, json_t *root, const char *path, Error *e) {
    json_t *cpl = json_object_get(root, "codes_per_level");
    if (!cpl) return err_set(e, "%s: missing field \"codes_per_level\"", path);
    if (!json_is_array(cpl) || json_array_size(cpl) != (size_t)d->code_levels)
        return err_set(e, "%s: field \"codes_per_level\" must be an array of code_levels = %d integers", path,
                       d->code_levels);
    for (int j = 0; j < d->code_levels; j++) {
        json_t *x = json_array_get(cpl, (size_t)j);
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > DATASET_MAX_CODES)
            return err_set(e, "%s: codes_per_level[%d] must be an integer in 1..%d", path, j, DATASET_MAX_CODES);
        d->codes_per_level[j] = (int)json_integer_value(x);
    }
    return 0;
}

// The optional "semantic_ids" object: the settings the codes were built with.
static int meta_semid(Dataset *d, json_t *root, const char *path, Error *e) {
    json_t *o = json_object_get(root, "semantic_ids");
    if (!o) return 0;
    if (!json_is_object(o)) return err_set(e, "%s: field \"semantic_ids\" must be an object", path);
    static const char *KEYS[7] = {"levels", "codes", "dim", "window", "iters", "power_iters", "seed"};
    long long v[7];
    for (int k = 0; k < 7; k++) {
        json_t *x = json_object_get(o, KEYS[k]);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || (k < 6 && json_integer_value(x) > INT_MAX))
            return err_set(e, "%s: semantic_ids.%s must be a non-negative integer", path, KEYS[k]);
        v[k] = json_integer_value(x);
    }
    SemIdConfig c = {.levels = (int)v[0], .codes = (int)v[1], .dim = (int)v[2], .window = (int)v[3],
                     .iters = (int)v[4], .power_iters = (int)v[5], .seed = (uint64_t)v[6]};
    char msg[160];
    if (semid_config_check(&c, msg, sizeof msg) != 0) return err_set(e, "%s: semantic_ids: %s", path, msg);
    d->has_semid = 1;
    d->semid = c;
    return 0;
}

// expect[s]: the optional "interactions": {"train": N, ...} counts (-1 when absent),
// checked against the split files once they are loaded.
static int meta_interactions(long long expect[SPLIT_COUNT], json_t *root, const char *path, Error *e) {
    for (int sp = 0; sp < SPLIT_COUNT; sp++) expect[sp] = -1;
    json_t *inter = json_object_get(root, "interactions");
    if (!inter) return 0;
    if (!json_is_object(inter)) return err_set(e, "%s: field \"interactions\" must be an object", path);
    for (int sp = 0; sp < SPLIT_COUNT; sp++) {
        json_t *x = json_object_get(inter, SPLIT_NAMES[sp]);
        if (!x) continue;
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return err_set(e, "%s: interactions.%s must be a non-negative integer", path, SPLIT_NAMES[sp]);
        expect[sp] = json_integer_value(x);
    }
    return 0;
}

// Every field of the parsed meta.json object into d (and expect).
static int meta_fields(Dataset *d, long long expect[SPLIT_COUNT], json_t *root, const char *path, Error *e) {
    char format[64];
    long long v;
    if (!json_is_object(root)) return err_set(e, "%s: expected a JSON object", path);
    if (meta_string(path, root, "format", 1, format, sizeof format, e) < 0) return -1;
    if (strcmp(format, "earnest-dataset") != 0)
        return err_set(e, "%s: field \"format\" is \"%s\", expected \"earnest-dataset\"", path, format);
    if (meta_int(path, root, "version", 1, 1, 1, &v, e) != 0) return -1;
    if (meta_string(path, root, "name", 1, d->name, sizeof d->name, e) < 0 ||
        meta_string(path, root, "source", 0, d->source, sizeof d->source, e) < 0)
        return -1;
    int rc = meta_string(path, root, "codes_method", 0, d->codes_method, sizeof d->codes_method, e);
    if (rc < 0) return -1;
    if (rc == 1) snprintf(d->codes_method, sizeof d->codes_method, "unknown");
    if (meta_int(path, root, "n_users", 1, DATASET_MAX_IDS, 1, &v, e) != 0) return -1;
    d->n_users = (int)v;
    if (meta_int(path, root, "n_items", 1, DATASET_MAX_IDS, 1, &v, e) != 0) return -1;
    d->n_items = (int)v;
    if (meta_int(path, root, "code_levels", 1, DATASET_MAX_LEVELS, 1, &v, e) != 0) return -1;
    d->code_levels = (int)v;
    rc = meta_int(path, root, "seed", 0, LLONG_MAX, 0, &v, e);
    if (rc < 0) return -1;
    if (rc == 0) {
        d->has_seed = 1;
        d->seed = (uint64_t)v;
    }
    if (meta_codes_per_level(d, root, path, e) != 0 || meta_semid(d, root, path, e) != 0) return -1;
    return meta_interactions(expect, root, path, e);
}

int dataset_parse_meta(Dataset *d, long long expect[SPLIT_COUNT], const char *text, size_t len,
                       const char *path, Error *e) {
    for (int sp = 0; sp < SPLIT_COUNT; sp++) expect[sp] = -1;
    if (len == 0) return err_set(e, "%s: empty file", path);
    json_t *root;
    if (dataset_json_parse(&root, text, len, path, e) != 0) return -1;
    int rc = meta_fields(d, expect, root, path, e);
    json_decref(root);
    return rc;
}

static int meta_load(Dataset *d, long long expect[SPLIT_COUNT], const char *path, Error *e) {
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len, e) != 0) return -1;
    int rc = dataset_parse_meta(d, expect, text, len, path, e);
    free(text);
    return rc;
}

// ---- the whole directory --------------------------------------------------

static int load_split_file(DatasetSplit *out, const char *dir, const char *name, const Dataset *d, Error *e) {
    char path[4096];
    if (path_join(path, sizeof path, dir, name) != 0) return err_set(e, "%s/%s: path too long", dir, name);
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len, e) != 0) return -1;
    int rc = dataset_parse_split(out, text, len, path, d->n_users, d->n_items, e);
    free(text);
    return rc;
}

int dataset_load(Dataset *d, const char *dir, Error *e) {
    memset(d, 0, sizeof *d);
    char path[4096];
    if (path_join(path, sizeof path, dir, "meta.json") != 0) return err_set(e, "%s: path too long", dir);
    long long expect[SPLIT_COUNT];
    if (meta_load(d, expect, path, e) != 0) goto fail;
    static const char *FILES[SPLIT_COUNT] = {"train.txt", "valid.txt", "test.txt"};
    for (int s = 0; s < SPLIT_COUNT; s++) {
        if (load_split_file(&d->splits[s], dir, FILES[s], d, e) != 0) goto fail;
        size_t got = d->splits[s].offsets[d->n_users];
        if (expect[s] >= 0 && (size_t)expect[s] != got) {
            err_set(e, "%s/%s: %zu interactions, meta.json interactions.%s says %lld", dir, FILES[s], got,
                    SPLIT_NAMES[s], expect[s]);
            goto fail;
        }
    }
    if (path_join(path, sizeof path, dir, "codes.tsv") != 0) { err_set(e, "%s: path too long", dir); goto fail; }
    char *text;
    size_t len;
    if (file_read_all(path, &text, &len, e) != 0) goto fail;
    int rc = dataset_parse_codes(&d->codes, text, len, path, d->n_items, d->code_levels, d->codes_per_level, e);
    free(text);
    if (rc != 0) goto fail;
    return 0;
fail:
    dataset_free(d);
    return -1;
}

void dataset_free(Dataset *d) {
    for (int s = 0; s < SPLIT_COUNT; s++) {
        free(d->splits[s].offsets);
        free(d->splits[s].items);
    }
    free(d->codes);
    memset(d, 0, sizeof *d);
}

// ---- access ---------------------------------------------------------------

const int *dataset_user_items(const Dataset *d, Split s, int user, int *n) {
    CHECK(user >= 1 && user <= d->n_users && s >= 0 && s < SPLIT_COUNT, "user %d / split %d out of range", user, s);
    const DatasetSplit *sp = &d->splits[s];
    *n = (int)(sp->offsets[user] - sp->offsets[user - 1]);
    return sp->items + sp->offsets[user - 1];
}

size_t dataset_interactions(const Dataset *d, Split s) { return d->splits[s].offsets[d->n_users]; }

const int *dataset_item_code(const Dataset *d, int item) {
    CHECK(item >= 1 && item <= d->n_items, "item %d out of range 1..%d", item, d->n_items);
    return d->codes + (size_t)item * (size_t)d->code_levels;
}

int dataset_code_string(char *out, const Dataset *d, int item) {
    const int *code = dataset_item_code(d, item);
    int n = 0;
    for (int j = 0; j < d->code_levels; j++)
        n += snprintf(out + n, (size_t)(DATASET_CODE_STR_MAX - n), "<%c_%d>", 'a' + j, code[j]);
    return n;
}
