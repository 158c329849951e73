// prepare.c: AtSpeed release reading, prepared-directory writing, codes.
// See prepare.h for the pipeline and dataset.h for the directory's format
// (read back by dataset_load alone).
#include "datasets/prepare.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

static const char *SPLIT_NAMES[SPLIT_COUNT] = {"train", "valid", "test"};

void prep_set_meta(Dataset *d, const char *name, const char *source) {
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->source, sizeof d->source, "%s", source);
}

// ---- "uid item item ..." text ------------------------------------------------

// Parses a decimal id of n chars: 0 ok, -1 not a plain number, -2 above DATASET_MAX_IDS.
static int parse_id(const char *s, size_t n, int *out) {
    if (n == 0) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
        if (v > DATASET_MAX_IDS) return -2;
    }
    *out = (int)v;
    return 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

int prep_parse_seq_text(DatasetSplit *out, int *n_users_out, int *max_seen, const char *text, size_t len,
                        const char *path, int max_item, Error *e) {
    size_t cap_u = 1024, cap_i = 4096, n_items = 0;
    size_t *offsets = xmalloc(cap_u * sizeof *offsets);
    int *items = xmalloc(cap_i * sizeof *items);
    int n_users = 0, seen = 0;
    size_t line = 0, pos = 0;
    offsets[0] = 0;
    int only_blank = 1;
    for (size_t i = 0; i < len; i++)
        if (!is_blank(text[i]) && text[i] != '\n') { only_blank = 0; break; }
    if (only_blank) {
        err_set(e, "%s: file is empty (expected one line per user)", path);
        goto fail;
    }
    while (pos < len) {
        line++;
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        size_t next = end < len ? end + 1 : end;
        size_t q = pos;
        while (q < end && is_blank(text[q])) q++;
        if (q == end) {
            // A blank last line (the file's final newline plus spaces) is no user.
            if (next >= len) break;
            err_set(e, "%s:%zu: empty line (expected a user id)", path, line);
            goto fail;
        }
        int field = 0;
        while (q < end) {
            size_t t = q;
            while (t < end && !is_blank(text[t])) t++;
            int v = 0, rc = parse_id(text + q, t - q, &v);
            const char *what = field == 0 ? "user id" : "item id";
            if (rc == -1) {
                err_set(e, "%s:%zu: %s '%.*s' is not a positive integer", path, line, what,
                        (int)(t - q > 40 ? 40 : t - q), text + q);
                goto fail;
            }
            if (rc == -2 || v == 0) {
                err_set(e, "%s:%zu: %s %.*s is out of range", path, line, what,
                        (int)(t - q > 40 ? 40 : t - q), text + q);
                goto fail;
            }
            if (field == 0) {
                if (v <= n_users) {
                    err_set(e, "%s:%zu: duplicate user %d (first on line %d)", path, line, v, v);
                    goto fail;
                }
                if (v != n_users + 1) {
                    err_set(e, "%s:%zu: user %d out of order (expected user %d: users must be 1..n in order)",
                            path, line, v, n_users + 1);
                    goto fail;
                }
                n_users = v;
            } else {
                if (max_item >= 0 && v > max_item) {
                    err_set(e, "%s:%zu: item %d is not in the code map (items 1..%d)", path, line, v,
                            max_item);
                    goto fail;
                }
                if (n_items == cap_i) items = xrealloc(items, (cap_i *= 2) * sizeof *items);
                items[n_items++] = v;
                if (v > seen) seen = v;
            }
            field++;
            q = t;
            while (q < end && is_blank(text[q])) q++;
        }
        if ((size_t)n_users + 1 >= cap_u) offsets = xrealloc(offsets, (cap_u *= 2) * sizeof *offsets);
        offsets[n_users] = n_items;
        pos = next;
    }
    out->offsets = offsets;
    out->items = items;
    *n_users_out = n_users;
    if (max_seen) *max_seen = seen;
    return 0;
fail:
    free(offsets);
    free(items);
    return -1;
}

// ---- LC-Rec code map -----------------------------------------------------------

// Checks that the keys of the code map are exactly "0".."n-1" and returns the
// code length (the size of key "0"'s list).
static int code_json_keys(json_t *root, size_t *levels, const char *path, Error *e) {
    if (!json_is_object(root)) return err_set(e, "%s: expected a JSON object {\"item id - 1\": [tokens]}", path);
    size_t n = json_object_size(root);
    if (n == 0) return err_set(e, "%s: the code map is empty", path);
    if (n > DATASET_MAX_IDS) return err_set(e, "%s: too many items (%zu)", path, n);
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        int k = 0;
        if (parse_id(key, strlen(key), &k) != 0)
            return err_set(e, "%s: key \"%.40s\" is not an item id (0-based integer)", path, key);
        if ((size_t)k >= n)
            return err_set(e, "%s: key \"%s\" is out of range: %zu entries need keys 0..%zu (some id is missing)",
                           path, key, n, n - 1);
    }
    // n keys, all distinct, all in 0..n-1: so they are exactly 0..n-1.
    json_t *first = json_object_get(root, "0");
    *levels = json_is_array(first) ? json_array_size(first) : 0;
    if (*levels < 1 || *levels > DATASET_MAX_LEVELS)
        return err_set(e, "%s: key \"0\": expected a list of 1..%d code tokens", path, DATASET_MAX_LEVELS);
    return 0;
}

// Key k's list of tokens into row[levels].
static int code_json_row(int *row, json_t *root, size_t k, size_t levels, int max_codes, const char *path,
                         Error *e) {
    char kbuf[32];
    snprintf(kbuf, sizeof kbuf, "%zu", k);
    json_t *arr = json_object_get(root, kbuf);
    if (!json_is_array(arr)) return err_set(e, "%s: key \"%s\": expected a list of code tokens", path, kbuf);
    if (json_array_size(arr) != levels)
        return err_set(e, "%s: key \"%s\": %zu code tokens, expected %zu (as key \"0\")", path, kbuf,
                       json_array_size(arr), levels);
    for (size_t l = 0; l < levels; l++) {
        json_t *tok = json_array_get(arr, l);
        const char *s = json_is_string(tok) ? json_string_value(tok) : NULL;
        const char *end = s ? s + strlen(s) : NULL, *after = NULL;
        if (!s || dataset_parse_code_token(s, end, (int)l, max_codes, &row[l], &after) != CODE_TOKEN_OK ||
            after != end)
            return err_set(e, "%s: key \"%s\": token %zu is not <%c_N> with N in 0..%d", path, kbuf, l,
                           (char)('a' + l), max_codes - 1);
    }
    return 0;
}

int prep_parse_code_json(Dataset *d, const char *text, size_t len, const char *path, int codes_per_level_max,
                         Error *e) {
    json_t *root;
    if (dataset_json_parse(&root, text, len, path, e) != 0) return -1; // a key given twice is an error
    size_t levels = 0;
    if (code_json_keys(root, &levels, path, e) != 0) {
        json_decref(root);
        return -1;
    }
    size_t n = json_object_size(root);
    int *codes = xmalloc((n + 1) * levels * sizeof *codes);
    for (size_t l = 0; l < levels; l++) codes[l] = -1; // row 0: no item 0
    for (size_t k = 0; k < n; k++)
        if (code_json_row(codes + (k + 1) * levels, root, k, levels, codes_per_level_max, path, e) != 0) {
            free(codes);
            json_decref(root);
            return -1;
        }
    json_decref(root);
    d->n_items = (int)n;
    d->code_levels = (int)levels;
    for (int l = 0; l < DATASET_MAX_LEVELS; l++) d->codes_per_level[l] = l < (int)levels ? codes_per_level_max : 0;
    d->codes = codes;
    return 0;
}

// ---- AtSpeed release -----------------------------------------------------------

// Reads sequential_{train,valid,test}.txt and checks they agree on the user count.
static int read_atspeed_splits(Dataset *d, const char *dir, int max_item, Error *e) {
    d->n_users = 0;
    for (int k = 0; k < SPLIT_COUNT; k++) {
        char file[256], path[4096];
        snprintf(file, sizeof file, "sequential_%s.txt", SPLIT_NAMES[k]);
        if (path_join(path, sizeof path, dir, file) != 0) return err_set(e, "%s: path too long", dir);
        char *text = NULL;
        size_t len = 0;
        int n_users = 0;
        if (file_read_all(path, &text, &len, e) != 0) return -1;
        int rc = prep_parse_seq_text(&d->splits[k], &n_users, NULL, text, len, path, max_item, e);
        free(text);
        if (rc != 0) return -1;
        if (k > 0 && n_users != d->n_users)
            return err_set(e, "%s: %d users, but the %s split has %d (every split lists every user)", path,
                           n_users, SPLIT_NAMES[0], d->n_users);
        d->n_users = n_users;
    }
    return 0;
}

int prep_read_atspeed(Dataset *d, const char *src_dir, const char *name, Error *e) {
    memset(d, 0, sizeof *d);
    char file[512], path[4096];
    snprintf(file, sizeof file, "%s.LCRec-1e-3lr.json", name);
    if (path_join(path, sizeof path, src_dir, file) != 0) return err_set(e, "%s: path too long", src_dir);
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, &text, &len, e) != 0) return -1;
    int rc = prep_parse_code_json(d, text, len, path, 256, e);
    free(text);
    if (rc != 0) return -1;
    if (read_atspeed_splits(d, src_dir, d->n_items, e) != 0) {
        dataset_free(d);
        return -1;
    }
    snprintf(d->codes_method, sizeof d->codes_method, "lcrec-rqvae");
    return 0;
}

// ---- writing -------------------------------------------------------------------

static int write_split(const char *path, const Dataset *d, Split k, Error *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, "%s: cannot create: %s", path, strerror(errno));
    const DatasetSplit *s = &d->splits[k];
    for (int u = 1; u <= d->n_users; u++) {
        fprintf(f, "%d", u);
        for (size_t t = s->offsets[u - 1]; t < s->offsets[u]; t++) fprintf(f, " %d", s->items[t]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return err_set(e, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_codes(const char *path, const Dataset *d, Error *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, "%s: cannot create: %s", path, strerror(errno));
    for (int i = 1; i <= d->n_items; i++) {
        fprintf(f, "%d\t", i);
        const int *code = dataset_item_code(d, i);
        for (int l = 0; l < d->code_levels; l++) fprintf(f, "<%c_%d>", 'a' + l, code[l]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return err_set(e, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static json_t *semid_json(const SemIdConfig *c) {
    json_t *sc = json_object();
    CHECK(sc, "json allocation failed");
    json_object_set_new(sc, "levels", json_integer(c->levels));
    json_object_set_new(sc, "codes", json_integer(c->codes));
    json_object_set_new(sc, "dim", json_integer(c->dim));
    json_object_set_new(sc, "window", json_integer(c->window));
    json_object_set_new(sc, "iters", json_integer(c->iters));
    json_object_set_new(sc, "power_iters", json_integer(c->power_iters));
    json_object_set_new(sc, "seed", json_integer((json_int_t)c->seed));
    return sc;
}

// meta.json; its keys in this order (the files are compared byte for byte).
static int write_meta(const char *path, const Dataset *d, Error *e) {
    json_t *root = json_object();
    json_t *cpl = json_array();
    json_t *inter = json_object();
    CHECK(root && cpl && inter, "json allocation failed");
    for (int l = 0; l < d->code_levels; l++) json_array_append_new(cpl, json_integer(d->codes_per_level[l]));
    for (int k = 0; k < SPLIT_COUNT; k++)
        json_object_set_new(inter, SPLIT_NAMES[k], json_integer((json_int_t)dataset_interactions(d, (Split)k)));
    json_object_set_new(root, "format", json_string("earnest-dataset"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "name", json_string(d->name));
    json_object_set_new(root, "source", json_string(d->source));
    json_object_set_new(root, "n_users", json_integer(d->n_users));
    json_object_set_new(root, "n_items", json_integer(d->n_items));
    json_object_set_new(root, "code_levels", json_integer(d->code_levels));
    json_object_set_new(root, "codes_per_level", cpl);
    if (d->has_seed) json_object_set_new(root, "seed", json_integer((json_int_t)d->seed));
    json_object_set_new(root, "codes_method", json_string(d->codes_method));
    if (d->has_semid) json_object_set_new(root, "semantic_ids", semid_json(&d->semid));
    json_object_set_new(root, "interactions", inter);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc != 0) return err_set(e, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

int prep_write_dir(const char *dir, const Dataset *d, Error *e) {
    if (d->code_levels < 1 || d->code_levels > DATASET_MAX_LEVELS)
        return err_set(e, "%s: %d code levels (1..%d allowed)", dir, d->code_levels, DATASET_MAX_LEVELS);
    CHECK(d->codes && d->n_users >= 1 && d->n_items >= 1, "prep_write_dir: incomplete dataset");
    char tmp[4200], path[4400];
    atomic_tmp_path(tmp, sizeof tmp, dir);
    remove_tree(tmp);
    if (make_parent_dirs(dir, e)) return -1;
    if (mkdir(tmp, 0755) != 0) return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
    for (int k = 0; k < SPLIT_COUNT; k++) {
        char file[32];
        snprintf(file, sizeof file, "%s.txt", SPLIT_NAMES[k]);
        path_join(path, sizeof path, tmp, file);
        if (write_split(path, d, (Split)k, e) != 0) goto fail;
    }
    path_join(path, sizeof path, tmp, "codes.tsv");
    if (write_codes(path, d, e) != 0) goto fail;
    path_join(path, sizeof path, tmp, "meta.json");
    if (write_meta(path, d, e) != 0) goto fail;
    if (rename_dir_into_place(tmp, dir, e) != 0) goto fail;
    return 0;
fail:
    remove_tree(tmp);
    return -1;
}

// ---- codes ----------------------------------------------------------------------

void prep_build_codes(Dataset *d, const SemIdConfig *cfg) {
    int n = d->n_items, L = cfg->levels + 1; // + the collision level
    CHECK(L <= DATASET_MAX_LEVELS, "prep_build_codes: %d levels", L);
    float *emb = xmalloc((size_t)n * cfg->dim * sizeof *emb);
    const DatasetSplit *train = &d->splits[SPLIT_TRAIN];
    semid_embed(emb, train->offsets, train->items, d->n_users, n, cfg);
    free(d->codes);
    d->code_levels = L;
    memset(d->codes_per_level, 0, sizeof d->codes_per_level);
    d->codes = xmalloc((size_t)(n + 1) * L * sizeof *d->codes);
    for (int l = 0; l < L; l++) d->codes[l] = -1; // row 0: no item 0
    // semid_quantize fills rows 0..n-1 of its matrix with items 1..n: row i of d->codes.
    semid_quantize(d->codes + L, d->codes_per_level, emb, n, cfg->dim, cfg);
    free(emb);
    snprintf(d->codes_method, sizeof d->codes_method, "earnest-rkmeans");
    d->has_seed = 1;
    d->seed = cfg->seed;
    d->has_semid = 1;
    d->semid = *cfg;
}
