// prepare.c: AtSpeed release reading, prepared-directory writing and reading.
// See prepare.h for the formats and the pipeline.
#include "datasets/prepare.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

static const char *SPLIT_NAMES[PREP_NSPLITS] = {"train", "valid", "test"};

void prep_seqs_free(PrepSeqs *s) {
    for (int k = 0; k < PREP_NSPLITS; k++) {
        free(s->offsets[k]);
        free(s->items[k]);
        s->offsets[k] = NULL;
        s->items[k] = NULL;
    }
}

void prep_codes_free(PrepCodes *c) {
    free(c->codes);
    c->codes = NULL;
}

size_t prep_seqs_count(const PrepSeqs *s, int split) {
    return s->offsets[split] ? s->offsets[split][s->n_users] : 0;
}

void prep_meta_init(PrepMeta *m, const char *name, const char *source, const char *codes_method) {
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->source, sizeof m->source, "%s", source);
    snprintf(m->codes_method, sizeof m->codes_method, "%s", codes_method);
}

// ---- "uid item item ..." text ------------------------------------------------

// Parses a decimal id of n chars: 0 ok, -1 not a plain number, -2 above PREP_MAX_IDS.
static int parse_id(const char *s, size_t n, int *out) {
    if (n == 0) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
        if (v > PREP_MAX_IDS) return -2;
    }
    *out = (int)v;
    return 0;
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

int prep_parse_seq_text(size_t **offsets_out, int **items_out, int *n_users_out, int *max_seen,
                        const char *text, size_t len, const char *path, int max_item, Error *e) {
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
    *offsets_out = offsets;
    *items_out = items;
    *n_users_out = n_users;
    if (max_seen) *max_seen = seen;
    return 0;
fail:
    free(offsets);
    free(items);
    return -1;
}

// ---- LC-Rec code map -----------------------------------------------------------

// Parses "<x_N>" with x == letter: 0 ok and *value = N, -1 otherwise.
static int parse_code_token(const char *s, char letter, int max_codes, int *value) {
    size_t n = strlen(s);
    if (n < 5 || s[0] != '<' || s[1] != letter || s[2] != '_' || s[n - 1] != '>') return -1;
    int v = 0;
    if (parse_id(s + 3, n - 4, &v) != 0 || v >= max_codes) return -1;
    *value = v;
    return 0;
}

int prep_parse_code_json(PrepCodes *codes, int *n_items_out, const char *text, size_t len,
                         const char *path, int codes_per_level_max, Error *e) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root) return err_set(e, "%s:%d: invalid JSON: %s", path, jerr.line, jerr.text);
    int *out = NULL;
    if (!json_is_object(root)) {
        err_set(e, "%s: expected a JSON object {\"item id - 1\": [tokens]}", path);
        goto fail;
    }
    size_t n = json_object_size(root);
    if (n == 0) {
        err_set(e, "%s: the code map is empty", path);
        goto fail;
    }
    if (n > PREP_MAX_IDS) {
        err_set(e, "%s: too many items (%zu)", path, n);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        int k = 0;
        if (parse_id(key, strlen(key), &k) != 0) {
            err_set(e, "%s: key \"%.40s\" is not an item id (0-based integer)", path, key);
            goto fail;
        }
        if ((size_t)k >= n) {
            err_set(e, "%s: key \"%s\" is out of range: %zu entries need keys 0..%zu (some id is missing)",
                    path, key, n, n - 1);
            goto fail;
        }
    }
    // n keys, all distinct, all in 0..n-1: so they are exactly 0..n-1.
    json_t *first = json_object_get(root, "0");
    size_t levels = json_is_array(first) ? json_array_size(first) : 0;
    if (levels < 1 || levels > PREP_MAX_LEVELS) {
        err_set(e, "%s: key \"0\": expected a list of 1..%d code tokens", path, PREP_MAX_LEVELS);
        goto fail;
    }
    out = xmalloc(n * levels * sizeof *out);
    for (size_t k = 0; k < n; k++) {
        char kbuf[32];
        snprintf(kbuf, sizeof kbuf, "%zu", k);
        json_t *arr = json_object_get(root, kbuf);
        if (!json_is_array(arr)) {
            err_set(e, "%s: key \"%s\": expected a list of code tokens", path, kbuf);
            goto fail;
        }
        if (json_array_size(arr) != levels) {
            err_set(e, "%s: key \"%s\": %zu code tokens, expected %zu (as key \"0\")", path, kbuf,
                    json_array_size(arr), levels);
            goto fail;
        }
        for (size_t l = 0; l < levels; l++) {
            json_t *tok = json_array_get(arr, l);
            int v = 0;
            if (!json_is_string(tok) ||
                parse_code_token(json_string_value(tok), (char)('a' + l), codes_per_level_max, &v) != 0) {
                err_set(e, "%s: key \"%s\": token %zu is not <%c_N> with N in 0..%d", path, kbuf, l,
                        (char)('a' + l), codes_per_level_max - 1);
                goto fail;
            }
            out[k * levels + l] = v;
        }
    }
    json_decref(root);
    codes->levels = (int)levels;
    for (int l = 0; l < PREP_MAX_LEVELS; l++) codes->codes_per_level[l] = l < (int)levels ? codes_per_level_max : 0;
    codes->codes = out;
    *n_items_out = (int)n;
    return 0;
fail:
    free(out);
    json_decref(root);
    return -1;
}

// ---- AtSpeed release -----------------------------------------------------------

// Reads the three split files with prefix/suffix naming and checks they agree
// on the user count.
static int read_splits(PrepSeqs *seqs, const char *dir, const char *prefix, int max_item, Error *e) {
    memset(seqs->offsets, 0, sizeof seqs->offsets);
    memset(seqs->items, 0, sizeof seqs->items);
    seqs->n_users = 0;
    for (int k = 0; k < PREP_NSPLITS; k++) {
        char file[256], path[4096];
        snprintf(file, sizeof file, "%s%s.txt", prefix, SPLIT_NAMES[k]);
        if (path_join(path, sizeof path, dir, file) != 0) {
            prep_seqs_free(seqs);
            return err_set(e, "%s: path too long", dir);
        }
        char *text = NULL;
        size_t len = 0;
        int n_users = 0;
        if (file_read_all(path, &text, &len, e) != 0) {
            prep_seqs_free(seqs);
            return -1;
        }
        int rc = prep_parse_seq_text(&seqs->offsets[k], &seqs->items[k], &n_users, NULL, text, len,
                                     path, max_item, e);
        free(text);
        if (rc != 0) {
            prep_seqs_free(seqs);
            return -1;
        }
        if (k > 0 && n_users != seqs->n_users) {
            prep_seqs_free(seqs);
            return err_set(e, "%s: %d users, but the %s split has %d (every split lists every user)",
                           path, n_users, SPLIT_NAMES[0], seqs->n_users);
        }
        seqs->n_users = n_users;
    }
    return 0;
}

int prep_read_atspeed(PrepSeqs *seqs, PrepCodes *codes, const char *src_dir, const char *name,
                      Error *e) {
    char file[512], path[4096];
    snprintf(file, sizeof file, "%s.LCRec-1e-3lr.json", name);
    if (path_join(path, sizeof path, src_dir, file) != 0) return err_set(e, "%s: path too long", src_dir);
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, &text, &len, e) != 0) return -1;
    int n_items = 0;
    int rc = prep_parse_code_json(codes, &n_items, text, len, path, 256, e);
    free(text);
    if (rc != 0) return -1;
    if (read_splits(seqs, src_dir, "sequential_", n_items, e) != 0) {
        prep_codes_free(codes);
        return -1;
    }
    seqs->n_items = n_items;
    return 0;
}

// ---- writing -------------------------------------------------------------------

static int write_split(const char *path, const PrepSeqs *s, int k, Error *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, "%s: cannot create: %s", path, strerror(errno));
    for (int u = 1; u <= s->n_users; u++) {
        fprintf(f, "%d", u);
        for (size_t t = s->offsets[k][u - 1]; t < s->offsets[k][u]; t++) fprintf(f, " %d", s->items[k][t]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return err_set(e, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_codes(const char *path, const PrepCodes *c, int n_items, Error *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, "%s: cannot create: %s", path, strerror(errno));
    for (int i = 1; i <= n_items; i++) {
        fprintf(f, "%d\t", i);
        for (int l = 0; l < c->levels; l++) fprintf(f, "<%c_%d>", 'a' + l, c->codes[(size_t)(i - 1) * c->levels + l]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return err_set(e, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_meta(const char *path, const PrepMeta *m, const PrepSeqs *s, const PrepCodes *c,
                      Error *e) {
    json_t *root = json_object();
    json_t *cpl = json_array();
    json_t *inter = json_object();
    CHECK(root && cpl && inter, "json allocation failed");
    for (int l = 0; l < c->levels; l++) json_array_append_new(cpl, json_integer(c->codes_per_level[l]));
    for (int k = 0; k < PREP_NSPLITS; k++)
        json_object_set_new(inter, SPLIT_NAMES[k], json_integer((json_int_t)prep_seqs_count(s, k)));
    json_object_set_new(root, "format", json_string("earnest-dataset"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "name", json_string(m->name));
    json_object_set_new(root, "source", json_string(m->source));
    json_object_set_new(root, "n_users", json_integer(s->n_users));
    json_object_set_new(root, "n_items", json_integer(s->n_items));
    json_object_set_new(root, "code_levels", json_integer(c->levels));
    json_object_set_new(root, "codes_per_level", cpl);
    if (m->has_seed) json_object_set_new(root, "seed", json_integer((json_int_t)m->seed));
    json_object_set_new(root, "codes_method", json_string(m->codes_method));
    if (m->has_semid) {
        json_t *sc = json_object();
        CHECK(sc, "json allocation failed");
        json_object_set_new(sc, "levels", json_integer(m->semid.levels));
        json_object_set_new(sc, "codes", json_integer(m->semid.codes));
        json_object_set_new(sc, "dim", json_integer(m->semid.dim));
        json_object_set_new(sc, "window", json_integer(m->semid.window));
        json_object_set_new(sc, "iters", json_integer(m->semid.iters));
        json_object_set_new(sc, "power_iters", json_integer(m->semid.power_iters));
        json_object_set_new(sc, "seed", json_integer((json_int_t)m->semid.seed));
        json_object_set_new(root, "semantic_ids", sc);
    }
    json_object_set_new(root, "interactions", inter);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc != 0) return err_set(e, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

int prep_write_dir(const char *dir, const PrepMeta *meta, const PrepSeqs *seqs,
                   const PrepCodes *codes, Error *e) {
    if (codes->levels < 1 || codes->levels > PREP_MAX_LEVELS)
        return err_set(e, "%s: %d code levels (1..%d allowed)", dir, codes->levels, PREP_MAX_LEVELS);
    char tmp[4200], path[4400];
    atomic_tmp_path(tmp, sizeof tmp, dir);
    remove_tree(tmp);
    if (make_parent_dirs(dir, e)) return -1;
    if (mkdir(tmp, 0755) != 0) return err_set(e, "%s: cannot create: %s", tmp, strerror(errno));
    for (int k = 0; k < PREP_NSPLITS; k++) {
        char file[32];
        snprintf(file, sizeof file, "%s.txt", SPLIT_NAMES[k]);
        path_join(path, sizeof path, tmp, file);
        if (write_split(path, seqs, k, e) != 0) goto fail;
    }
    path_join(path, sizeof path, tmp, "codes.tsv");
    if (write_codes(path, codes, seqs->n_items, e) != 0) goto fail;
    path_join(path, sizeof path, tmp, "meta.json");
    if (write_meta(path, meta, seqs, codes, e) != 0) goto fail;
    if (rename_dir_into_place(tmp, dir, e) != 0) goto fail;
    return 0;
fail:
    remove_tree(tmp);
    return -1;
}

// ---- reading a prepared directory back ------------------------------------------

static int meta_int(json_t *root, const char *key, int lo, int hi, int *out, const char *path, Error *e) {
    json_t *v = json_object_get(root, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return err_set(e, "%s: field \"%s\" must be an integer in %d..%d", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

// codes.tsv: "item<TAB><a_N><b_N>..." for items 1..n_items in order.
static int parse_codes_tsv(PrepCodes *c, const char *text, size_t len, const char *path, int n_items,
                           Error *e) {
    int L = c->levels;
    c->codes = xmalloc((size_t)n_items * L * sizeof *c->codes);
    size_t pos = 0, line = 0;
    int item = 0;
    while (pos < len) {
        line++;
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        size_t stop = end;
        while (stop > pos && is_blank(text[stop - 1])) stop--;
        size_t next = end < len ? end + 1 : end;
        if (stop == pos && next >= len) break;
        size_t tab = pos;
        while (tab < stop && text[tab] != '\t') tab++;
        int id = 0;
        if (tab == stop || parse_id(text + pos, tab - pos, &id) != 0 || id != item + 1) {
            err_set(e, "%s:%zu: expected \"%d<TAB>codes\"", path, line, item + 1);
            goto fail;
        }
        if (id > n_items) {
            err_set(e, "%s:%zu: item %d beyond n_items %d", path, line, id, n_items);
            goto fail;
        }
        size_t q = tab + 1;
        for (int l = 0; l < L; l++) {
            size_t t = q;
            while (t < stop && text[t] != '>') t++;
            char tok[64];
            int v = 0;
            if (t == stop || t - q + 1 >= sizeof tok) {
                err_set(e, "%s:%zu: expected %d code tokens", path, line, L);
                goto fail;
            }
            memcpy(tok, text + q, t - q + 1);
            tok[t - q + 1] = 0;
            if (parse_code_token(tok, (char)('a' + l), c->codes_per_level[l], &v) != 0) {
                err_set(e, "%s:%zu: token %d is not <%c_N> with N < %d", path, line, l, 'a' + l,
                        c->codes_per_level[l]);
                goto fail;
            }
            c->codes[(size_t)item * L + l] = v;
            q = t + 1;
        }
        if (q != stop) {
            err_set(e, "%s:%zu: trailing text after %d code tokens", path, line, L);
            goto fail;
        }
        item++;
        pos = next;
    }
    if (item != n_items) {
        err_set(e, "%s: %d items, meta.json says %d", path, item, n_items);
        goto fail;
    }
    return 0;
fail:
    free(c->codes);
    c->codes = NULL;
    return -1;
}

int prep_read_dir(PrepSeqs *seqs, PrepCodes *codes, PrepMeta *meta, const char *dir, Error *e) {
    char path[4096];
    if (path_join(path, sizeof path, dir, "meta.json") != 0) return err_set(e, "%s: path too long", dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return err_set(e, "%s:%d: %s", path, jerr.line, jerr.text);
    memset(meta, 0, sizeof *meta);
    memset(codes, 0, sizeof *codes);
    int n_users = 0, n_items = 0, levels = 0;
    json_t *fmt = json_object_get(root, "format"), *name = json_object_get(root, "name");
    json_t *src = json_object_get(root, "source"), *cpl = json_object_get(root, "codes_per_level");
    json_t *seed = json_object_get(root, "seed"), *method = json_object_get(root, "codes_method");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "earnest-dataset") != 0) {
        err_set(e, "%s: field \"format\" must be \"earnest-dataset\"", path);
        goto fail;
    }
    if (!json_is_string(name) || !json_is_string(src)) {
        err_set(e, "%s: fields \"name\" and \"source\" must be strings", path);
        goto fail;
    }
    if (meta_int(root, "n_users", 1, PREP_MAX_IDS, &n_users, path, e) != 0 ||
        meta_int(root, "n_items", 1, PREP_MAX_IDS, &n_items, path, e) != 0 ||
        meta_int(root, "code_levels", 1, PREP_MAX_LEVELS, &levels, path, e) != 0)
        goto fail;
    if (!json_is_array(cpl) || json_array_size(cpl) != (size_t)levels) {
        err_set(e, "%s: field \"codes_per_level\" must list %d integers", path, levels);
        goto fail;
    }
    for (int l = 0; l < levels; l++) {
        json_t *v = json_array_get(cpl, (size_t)l);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > PREP_MAX_CODES) {
            err_set(e, "%s: codes_per_level[%d] must be in 1..%d", path, l, PREP_MAX_CODES);
            goto fail;
        }
        codes->codes_per_level[l] = (int)json_integer_value(v);
    }
    codes->levels = levels;
    snprintf(meta->name, sizeof meta->name, "%s", json_string_value(name));
    snprintf(meta->source, sizeof meta->source, "%s", json_string_value(src));
    snprintf(meta->codes_method, sizeof meta->codes_method, "%s",
             json_is_string(method) ? json_string_value(method) : "unknown");
    if (json_is_integer(seed)) {
        meta->has_seed = 1;
        meta->seed = (uint64_t)json_integer_value(seed);
    }
    json_decref(root);
    root = NULL;

    if (read_splits(seqs, dir, "", n_items, e) != 0) goto fail;
    if (seqs->n_users != n_users) {
        err_set(e, "%s: the splits list %d users, meta.json says %d", dir, seqs->n_users, n_users);
        prep_seqs_free(seqs);
        goto fail;
    }
    seqs->n_items = n_items;
    if (path_join(path, sizeof path, dir, "codes.tsv") != 0) {
        err_set(e, "%s: path too long", dir);
        prep_seqs_free(seqs);
        goto fail;
    }
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, &text, &len, e) != 0) {
        prep_seqs_free(seqs);
        goto fail;
    }
    int rc = parse_codes_tsv(codes, text, len, path, n_items, e);
    free(text);
    if (rc != 0) {
        prep_seqs_free(seqs);
        goto fail;
    }
    return 0;
fail:
    if (root) json_decref(root);
    return -1;
}

void prep_build_codes(PrepCodes *codes, const PrepSeqs *seqs, const SemIdConfig *cfg) {
    int n = seqs->n_items, L = cfg->levels;
    float *emb = xmalloc((size_t)n * cfg->dim * sizeof *emb);
    semid_embed(emb, seqs->offsets[PREP_TRAIN], seqs->items[PREP_TRAIN], seqs->n_users, n, cfg);
    memset(codes, 0, sizeof *codes);
    codes->levels = L + 1;
    codes->codes = xmalloc((size_t)n * (L + 1) * sizeof *codes->codes);
    semid_quantize(codes->codes, codes->codes_per_level, emb, n, cfg->dim, cfg);
    free(emb);
}
