// teacher_file.c: reading and checking a teacher file (format in teacher.h).
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiments/teacher.h"
#include "runtime/sha256.h"

static const char *TEACHER_MAGIC = "earnest-teacher 1\n";

// ---------------------------------------------------------------------------
// Header

static int hdr_int(long long *out, json_t *o, const char *key, const char *path, Error *e) {
    json_t *x = json_object_get(o, key);
    if (!json_is_integer(x)) return err_set(e, "%s: header field '%s' is missing or not an integer", path, key);
    *out = json_integer_value(x);
    return 0;
}

static int hdr_str(char *out, size_t n, json_t *o, const char *key, const char *path, Error *e) {
    json_t *x = json_object_get(o, key);
    if (!json_is_string(x)) return err_set(e, "%s: header field '%s' is missing or not a string", path, key);
    snprintf(out, n, "%s", json_string_value(x));
    return 0;
}

static int hdr_obj(json_t **out, json_t *o, const char *key, const char *path, Error *e) {
    *out = json_object_get(o, key);
    if (!json_is_object(*out)) return err_set(e, "%s: header field '%s' is missing or not an object", path, key);
    return 0;
}

static int parse_levels(Teacher *t, json_t *h, Error *e) {
    json_t *lt = json_object_get(h, "level_tokens");
    if (!json_is_array(lt) || (int)json_array_size(lt) != t->levels)
        return err_set(e, "%s: header field 'level_tokens' must be an array of %d arrays", t->path, t->levels);
    for (int j = 0; j < t->levels; j++) {
        json_t *a = json_array_get(lt, (size_t)j);
        if (!json_is_array(a) || json_array_size(a) == 0)
            return err_set(e, "%s: level_tokens[%d] is not a non-empty array", t->path, j);
        t->level_size[j] = (int)json_array_size(a);
        t->level_tokens[j] = xmalloc((size_t)t->level_size[j] * sizeof(int));
        for (int k = 0; k < t->level_size[j]; k++) {
            json_t *x = json_array_get(a, (size_t)k);
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= t->vocab_size)
                return err_set(e, "%s: level_tokens[%d][%d] is not a token id in [0, %d)", t->path, j, k, t->vocab_size);
            t->level_tokens[j][k] = (int)json_integer_value(x);
        }
    }
    return 0;
}

static int parse_header(Teacher *t, json_t *h, long long *records_bytes, Error *e) {
    const char *P = t->path;
    char fmt[64];
    long long v = 0, x = 0;
    json_t *dj, *mj, *vj;
    if (hdr_str(fmt, sizeof fmt, h, "format", P, e) || hdr_int(&v, h, "version", P, e)) return -1;
    if (strcmp(fmt, "earnest-teacher") || v != 1)
        return err_set(e, "%s: format '%s' version %lld, expected earnest-teacher 1", P, fmt, v);
    if (hdr_obj(&dj, h, "dataset", P, e) || hdr_obj(&mj, h, "model", P, e) || hdr_obj(&vj, h, "vocab", P, e)) return -1;
    if (hdr_str(t->dataset_name, sizeof t->dataset_name, dj, "name", P, e) ||
        hdr_str(t->data_sha, sizeof t->data_sha, dj, "sha256", P, e) ||
        hdr_str(t->model_dir, sizeof t->model_dir, mj, "dir", P, e) ||
        hdr_str(t->model_sha, sizeof t->model_sha, mj, "sha256", P, e) ||
        hdr_str(t->vocab_sha, sizeof t->vocab_sha, vj, "sha256", P, e) ||
        hdr_str(t->records_sha, sizeof t->records_sha, h, "records_sha256", P, e))
        return -1;
    if (hdr_int(&x, dj, "users", P, e)) return -1;
    t->n_users = (int)x;
    if (hdr_int(&x, dj, "items", P, e)) return -1;
    t->n_items = (int)x;
    if (hdr_int(&t->train_interactions, dj, "train_interactions", P, e)) return -1;
    if (hdr_int(&x, vj, "size", P, e)) return -1;
    t->vocab_size = (int)x;
    long long lv = 0, bm = 0, mh = 0, us = 0, ns = 0;
    if (hdr_int(&lv, h, "levels", P, e) || hdr_int(&bm, h, "beam", P, e) || hdr_int(&mh, h, "max_history", P, e) ||
        hdr_int(&us, h, "users", P, e) || hdr_int(&ns, h, "samples", P, e) ||
        hdr_int(records_bytes, h, "records_bytes", P, e))
        return -1;
    if (lv < 2 || lv > TEACHER_MAX_LEVELS) return err_set(e, "%s: levels %lld outside 2..%d", P, lv, TEACHER_MAX_LEVELS);
    if (bm < 1 || bm > 4096) return err_set(e, "%s: beam %lld outside 1..4096", P, bm);
    if (ns < 0 || *records_bytes < 0 || t->vocab_size < 1)
        return err_set(e, "%s: negative samples, records_bytes or vocab size", P);
    t->levels = (int)lv;
    t->beam = (int)bm;
    t->max_history = (int)mh;
    t->users = (int)us;
    t->n_records = (size_t)ns;
    return parse_levels(t, h, e);
}

// ---------------------------------------------------------------------------
// Records

typedef struct {
    const char *p;
    size_t n, at;
} Reader;

// Pointer to `count` 4-byte values at the cursor (the file is read into a
// malloc'd buffer and records start at a 4-byte multiple: see teacher_load).
static const void *take(Reader *r, size_t count) {
    size_t bytes = count * 4;
    if (count > (r->n - r->at) / 4) return NULL;
    const void *x = r->p + r->at;
    r->at += bytes;
    return x;
}

static int in_range_all(const int *x, size_t n, int lo, int hi) {
    for (size_t i = 0; i < n; i++)
        if (x[i] < lo || x[i] >= hi) return 0;
    return 1;
}

static int parse_record(Teacher *t, Reader *r, size_t k, size_t *n_node_ptrs, Error *e) {
    const int L = t->levels;
    TeacherRecord *rc = &t->rec[k];
    const int32_t *h = take(r, 6);
    if (!h) return err_set(e, "%s: record %zu: the file ends inside it", t->path, k);
    rc->user = h[0]; rc->pos = h[1]; rc->item = h[2]; rc->n_beams = h[3]; rc->n_nodes = h[4];
    if (rc->n_beams < 0 || rc->n_beams > t->beam || rc->n_nodes < 1 || rc->n_nodes > (rc->n_beams + 1) * L)
        return err_set(e, "%s: record %zu (user %d): n_beams %d / n_nodes %d out of range", t->path, k, rc->user,
                       rc->n_beams, rc->n_nodes);
    size_t nb = (size_t)rc->n_beams, nbl = nb * (size_t)L;
    if (!(rc->gt = take(r, (size_t)L)) || !(rc->beam = take(r, nbl)) || !(rc->score = take(r, nb)) ||
        !(rc->step_lp = take(r, nbl)) || !(rc->gt_node = take(r, (size_t)L)) || !(rc->beam_node = take(r, nbl)) ||
        !(rc->node_level = take(r, (size_t)rc->n_nodes)))
        return err_set(e, "%s: record %zu (user %d): the file ends inside it", t->path, k, rc->user);
    if (!in_range_all(rc->gt, (size_t)L, 0, t->vocab_size) || !in_range_all(rc->beam, nbl, 0, t->vocab_size) ||
        !in_range_all(rc->gt_node, (size_t)L, 0, rc->n_nodes) || !in_range_all(rc->beam_node, nbl, 0, rc->n_nodes) ||
        !in_range_all(rc->node_level, (size_t)rc->n_nodes, 0, L))
        return err_set(e, "%s: record %zu (user %d): a token, node or level index is out of range", t->path, k,
                       rc->user);
    for (int j = 0; j < L; j++) // node levels must match the rows that use them
        if (rc->node_level[rc->gt_node[j]] != j) return err_set(e, "%s: record %zu: gt_node[%d] is not a level-%d node", t->path, k, j, j);
    for (size_t b = 0; b < nb; b++)
        for (int j = 0; j < L; j++)
            if (rc->node_level[rc->beam_node[b * L + (size_t)j]] != j)
                return err_set(e, "%s: record %zu: beam_node[%zu][%d] is not a level-%d node", t->path, k, b, j, j);
    rc->node_lp = t->node_ptrs + *n_node_ptrs;
    for (int q = 0; q < rc->n_nodes; q++) {
        const float *lp = take(r, (size_t)t->level_size[rc->node_level[q]]);
        if (!lp) return err_set(e, "%s: record %zu (user %d): the file ends inside node %d", t->path, k, rc->user, q);
        for (int i = 0; i < t->level_size[rc->node_level[q]]; i++)
            if (!(lp[i] <= 1e-4f) || isnan(lp[i]))
                return err_set(e, "%s: record %zu node %d: log-probability %g is not <= 0", t->path, k, q, lp[i]);
        t->node_ptrs[(*n_node_ptrs)++] = lp;
    }
    return 0;
}

static int parse_records(Teacher *t, const char *p, size_t n, Error *e) {
    // Upper bound of the node count: every record has n_nodes >= 1 and at most (beam + 1) * levels.
    size_t cap = t->n_records * (size_t)(t->beam + 1) * (size_t)t->levels;
    if (t->n_records > n / 24 + 1) return err_set(e, "%s: %zu samples cannot fit in %zu bytes", t->path, t->n_records, n);
    t->rec = xcalloc(t->n_records ? t->n_records : 1, sizeof(TeacherRecord));
    t->node_ptrs = xmalloc((cap ? cap : 1) * sizeof(float *));
    Reader r = {p, n, 0};
    size_t used = 0;
    for (size_t k = 0; k < t->n_records; k++)
        if (parse_record(t, &r, k, &used, e)) return -1;
    if (r.at != n) return err_set(e, "%s: %zu bytes after the last record", t->path, n - r.at);
    return 0;
}

int teacher_load(Teacher *t, const char *path, Error *e) {
    memset(t, 0, sizeof *t);
    snprintf(t->path, sizeof t->path, "%s", path);
    size_t len;
    char *raw;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return err_set(e, "--teacher %s is a directory; give the target's teacher file (make it once with "
                       "earnest teacher --model %s --data DATA_DIR --out FILE)", path, path);
    if (file_read_all(path, &raw, &len, e)) return err_prefix(e, "--teacher: ");
    size_t ml = strlen(TEACHER_MAGIC);
    char *nl = len > ml ? memchr(raw + ml, '\n', len - ml) : NULL;
    if (len < ml || memcmp(raw, TEACHER_MAGIC, ml) || !nl) {
        free(raw);
        return err_set(e, "%s: not a teacher file (its first line is not 'earnest-teacher 1', or no header line "
                       "follows; make one with earnest teacher)", path);
    }
    json_error_t je;
    json_t *h = json_loadb(raw + ml, (size_t)(nl - raw - (ptrdiff_t)ml), 0, &je);
    long long rb = 0;
    int rc = h ? parse_header(t, h, &rb, e) : err_set(e, "%s: header line: %s", path, je.text);
    json_decref(h);
    size_t off = (size_t)(nl - raw) + 1, have = len - off;
    if (rc == 0 && (size_t)rb != have)
        rc = err_set(e, "%s: %s: the header says %lld bytes of records, the file holds %zu", path,
                     have < (size_t)rb ? "truncated" : "trailing bytes", rb, have);
    if (rc == 0) { // copy the records to an aligned buffer and check their digest
        t->data = xmalloc(have ? have : 1);
        memcpy(t->data, raw + off, have);
        Sha256 s;
        char hex[65];
        sha256_init(&s);
        sha256_update(&s, t->data, have);
        sha256_final_hex(&s, hex);
        if (strcmp(hex, t->records_sha))
            rc = err_set(e, "%s: the records' sha256 is %s, the header says %s (the file is damaged)", path, hex,
                         t->records_sha);
    }
    free(raw);
    if (rc == 0) rc = parse_records(t, t->data, have, e);
    if (rc) teacher_free(t);
    return rc;
}

void teacher_free(Teacher *t) {
    for (int j = 0; j < TEACHER_MAX_LEVELS; j++) free(t->level_tokens[j]);
    free(t->rec);
    free(t->data);
    free(t->node_ptrs);
    free(t->rec_of);
    memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------------------
// Against the training run

static int fits_header(const Teacher *t, const Dataset *d, const Vocab *v, Error *e) {
    char hex[65];
    if (strcmp(t->dataset_name, d->name) || t->n_users != d->n_users || t->n_items != d->n_items ||
        t->train_interactions != (long long)dataset_interactions(d, SPLIT_TRAIN))
        return err_set(e, "%s: made on dataset '%s' (%d users, %d items, %lld train interactions), not on this one "
                       "'%s' (%d users, %d items, %zu)", t->path, t->dataset_name, t->n_users, t->n_items,
                       t->train_interactions, d->name, d->n_users, d->n_items, dataset_interactions(d, SPLIT_TRAIN));
    teacher_data_sha(hex, d);
    if (strcmp(hex, t->data_sha))
        return err_set(e, "%s: dataset.sha256 %s differs from this dataset's %s (same name and sizes, other "
                       "contents)", t->path, t->data_sha, hex);
    if (t->levels != d->code_levels)
        return err_set(e, "%s: levels %d, the dataset has %d", t->path, t->levels, d->code_levels);
    teacher_vocab_sha(hex, v);
    if (t->vocab_size != v->size || strcmp(hex, t->vocab_sha))
        return err_set(e, "%s: vocab (size %d, sha256 %.12s...) differs from the student's (size %d, sha256 %.12s...): "
                       "a draft must share its target's vocabulary", t->path, t->vocab_size, t->vocab_sha, v->size, hex);
    return 0;
}

int teacher_check_fits(Teacher *t, const Dataset *d, const Vocab *v, Error *e) {
    if (fits_header(t, d, v, e)) return -1;
    const DatasetSplit *tr = &d->splits[SPLIT_TRAIN];
    t->rec_of_n = tr->offsets[d->n_users];
    t->rec_of = xmalloc((t->rec_of_n ? t->rec_of_n : 1) * sizeof(int));
    for (size_t i = 0; i < t->rec_of_n; i++) t->rec_of[i] = -1;
    const int L = t->levels;
    for (size_t k = 0; k < t->n_records; k++) {
        const TeacherRecord *r = &t->rec[k];
        int n;
        const int *items = r->user >= 1 && r->user <= d->n_users ? dataset_user_items(d, SPLIT_TRAIN, r->user, &n) : NULL;
        if (!items || r->pos < 1 || r->pos >= n || items[r->pos] != r->item)
            return err_set(e, "%s: record %zu: user %d position %d item %d is not a train target of this dataset",
                           t->path, k, r->user, r->pos, r->item);
        const int *code = dataset_item_code(d, r->item);
        for (int j = 0; j < L; j++)
            if (r->gt[j] != vocab_code_id(v, j, code[j]))
                return err_set(e, "%s: record %zu (user %d): gt[%d] is token %d, the item's code says %d", t->path, k,
                               r->user, j, r->gt[j], vocab_code_id(v, j, code[j]));
        size_t at = tr->offsets[r->user - 1] + (size_t)r->pos;
        if (t->rec_of[at] >= 0) return err_set(e, "%s: record %zu repeats (user %d, position %d)", t->path, k, r->user, r->pos);
        t->rec_of[at] = (int)k;
    }
    return 0;
}

const TeacherRecord *teacher_find(const Teacher *t, const Dataset *d, int user, int pos) {
    if (!t->rec_of || user < 1 || user > d->n_users) return NULL;
    size_t at = d->splits[SPLIT_TRAIN].offsets[user - 1] + (size_t)pos;
    if (at >= t->rec_of_n || at >= d->splits[SPLIT_TRAIN].offsets[user]) return NULL;
    return t->rec_of[at] >= 0 ? &t->rec[t->rec_of[at]] : NULL;
}
