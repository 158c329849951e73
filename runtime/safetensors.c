// safetensors.c: see safetensors.h.
#include "runtime/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// The data section is little-endian; copying F32 with memcpy and writing our
// floats as they lie in memory both assume a little-endian host.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

const char *st_dtype_name(StDtype d) {
    switch (d) {
    case ST_F32: return "F32";
    case ST_BF16: return "BF16";
    case ST_F16: return "F16";
    }
    return "?";
}

size_t st_dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

static int st_dtype_parse(const char *s, StDtype *d) {
    if (!strcmp(s, "F32")) *d = ST_F32;
    else if (!strcmp(s, "BF16")) *d = ST_BF16;
    else if (!strcmp(s, "F16")) *d = ST_F16;
    else return -1;
    return 0;
}

const char *st_shape_str(char *buf, size_t n, const size_t *shape, int ndim) {
    size_t at = 0;
    at += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%zu", i ? ", " : "", shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
    return buf;
}

// ---------------------------------------------------------------------------
// One file

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

// Orders tensors by where their data starts (ties: shorter first), for the overlap check.
static int cmp_offset(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

// Reads one header entry ("name": {"dtype", "shape", "data_offsets"}) into t.
static int st_parse_entry(StTensor *t, const char *path, const char *name, json_t *v,
                          const uint8_t *data, size_t data_size, Error *e) {
    if (!json_is_object(v)) return err_set(e, "%s: tensor '%s': header entry is not an object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return err_set(e, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    if (st_dtype_parse(json_string_value(jd), &t->dtype) != 0)
        return err_set(e, "%s: tensor '%s' has unsupported dtype %s (only F32, BF16 and F16 are read)",
                       path, name, json_string_value(jd));
    if (!json_is_array(js)) return err_set(e, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    if (json_array_size(js) > ST_MAX_DIMS)
        return err_set(e, "%s: tensor '%s': %zu dimensions, at most %d supported", path, name,
                       json_array_size(js), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return err_set(e, "%s: tensor '%s': shape entry %d is not a non-negative integer", path, name, i);
        t->shape[i] = (size_t)json_integer_value(d);
        if (!size_mul_ok(t->numel, t->shape[i], &t->numel))
            return err_set(e, "%s: tensor '%s': shape overflows", path, name);
    }
    if (!size_mul_ok(t->numel, st_dtype_size(t->dtype), &t->nbytes))
        return err_set(e, "%s: tensor '%s': shape overflows", path, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return err_set(e, "%s: tensor '%s': \"data_offsets\" must be [begin, end] integers", path, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < b)
        return err_set(e, "%s: tensor '%s': bad data_offsets [%lld, %lld)", path, name, (long long)b,
                       (long long)en);
    if ((unsigned long long)en > data_size)
        return err_set(e, "%s: tensor '%s': data_offsets [%lld, %lld) out of range: the data section holds "
                       "%zu bytes (file truncated?)", path, name, (long long)b, (long long)en, data_size);
    if ((size_t)(en - b) != t->nbytes) {
        char sb[256];
        return err_set(e, "%s: tensor '%s': data_offsets [%lld, %lld) span %lld bytes but shape %s of %s "
                       "needs %zu bytes", path, name, (long long)b, (long long)en, (long long)(en - b),
                       st_shape_str(sb, sizeof sb, t->shape, t->ndim), st_dtype_name(t->dtype), t->nbytes);
    }
    t->data = data + b;
    t->name = xstrdup(name);
    t->file = path;
    return 0;
}

// The data must tile the data section exactly: no overlaps, no holes, no
// trailing bytes (as the reference implementation requires).
static int st_check_tiling(const StFile *f, const uint8_t *data, size_t data_size, Error *e) {
    const StTensor **order = xmalloc((size_t)f->n_tensors * sizeof *order + 1);
    for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_offset);
    size_t end = 0; // end of the data seen so far
    const StTensor *prev = NULL;
    int rc = 0;
    for (int i = 0; i < f->n_tensors && rc == 0; i++) {
        const StTensor *t = order[i];
        size_t b = (size_t)(t->data - data);
        if (b < end)
            rc = err_set(e, "%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap", f->path, prev->name,
                         (size_t)(prev->data - data), end, t->name, b, b + t->nbytes);
        else if (b > end)
            rc = err_set(e, "%s: %zu unused bytes before tensor '%s' at data offset %zu (holes are not allowed)",
                         f->path, b - end, t->name, b);
        end = b + t->nbytes;
        prev = t;
    }
    if (rc == 0 && end != data_size)
        rc = err_set(e, "%s: %zu trailing bytes after the last tensor's data", f->path, data_size - end);
    free(order);
    return rc;
}

// Parses the header of the file's `size` bytes at base; the tensors point into base.
static int st_parse_header(StFile *f, const uint8_t *base, size_t size, Error *e) {
    if (size < 8)
        return err_set(e, "%s: file truncated: %zu bytes, shorter than the 8-byte header length", f->path, size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | base[i];
    if (hl > size - 8)
        return err_set(e, "%s: header length %llu goes beyond the file (%zu bytes): file truncated or not "
                       "a safetensors file", f->path, (unsigned long long)hl, size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)base + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_set(e, "%s: header is not valid JSON: %s (header byte %d)", f->path, jerr.text,
                       jerr.position);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = err_set(e, "%s: header is not a JSON object", f->path);
        goto done;
    }
    const uint8_t *data = base + 8 + hl;
    size_t data_size = size - 8 - (size_t)hl;
    f->tensors = xcalloc(json_object_size(root) + 1, sizeof *f->tensors);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = err_set(e, "%s: \"__metadata__\" is not an object", f->path);
                goto done;
            }
            continue;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        if ((rc = st_parse_entry(t, f->path, key, v, data, data_size, e)) != 0) goto done;
        f->n_tensors++;
    }
    if ((rc = st_check_tiling(f, data, data_size, e)) != 0) goto done;
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
done:
    json_decref(root);
    return rc;
}

int st_open(StFile *f, const char *path, Error *e) {
    memset(f, 0, sizeof *f);
    if (strlen(path) >= sizeof f->path) return err_set(e, "%s: path too long", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return err_set(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, "%s: not a regular file", path);
    }
    f->map_size = (size_t)st.st_size;
    if (f->map_size > 0) {
        void *p = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            close(fd);
            return err_set(e, "%s: cannot mmap %zu bytes: %s", path, f->map_size, strerror(err));
        }
        f->map = p;
    }
    close(fd); // the mapping stays valid
    if (st_parse_header(f, f->map, f->map_size, e) != 0) {
        st_close(f);
        return -1;
    }
    return 0;
}

int st_parse_mem(StFile *f, const void *data, size_t len, const char *path, Error *e) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (st_parse_header(f, data, len, e) != 0) {
        st_close(f);
        return -1;
    }
    return 0;
}

void st_close(StFile *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

const StTensor *st_file_find(const StFile *f, const char *name) {
    StTensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
}

void st_tensor_to_f32(float *out, const StTensor *t) {
    if (t->dtype == ST_F32) {
        memcpy(out, t->data, t->nbytes);
        return;
    }
    const uint8_t *src = t->data;
    long n = (long)t->numel;
    int bf = t->dtype == ST_BF16;
#pragma omp parallel for if (n > (1L << 16))
    for (long i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * (size_t)i, 2); // the data need not be 2-byte aligned
        out[i] = bf ? bf16_to_f32(h) : f16_to_f32(h);
    }
}

// ---------------------------------------------------------------------------
// A checkpoint directory (one file or an index with shards)

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}

// Collects every tensor of every file into s->tensors, sorted by name;
// a name in two files is an error.
static int st_set_collect(StSet *s, Error *e) {
    int n = 0;
    for (int i = 0; i < s->n_files; i++) n += s->files[i].n_tensors;
    s->tensors = xmalloc((size_t)n * sizeof *s->tensors + 1);
    s->n_tensors = 0;
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < s->files[i].n_tensors; j++) s->tensors[s->n_tensors++] = &s->files[i].tensors[j];
    qsort(s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, cmp_tensor_ptr_name);
    for (int i = 1; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i - 1]->name, s->tensors[i]->name))
            return err_set(e, "%s: tensor '%s' is stored twice: in %s and in %s", s->source,
                           s->tensors[i]->name, s->tensors[i - 1]->file, s->tensors[i]->file);
    return 0;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

// Opens the shards an index names and checks the index against them.
static int st_set_open_index(StSet *s, const char *dir, Error *e) {
    json_error_t jerr;
    json_t *root = json_load_file(s->source, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_set(e, "%s: line %d: not valid JSON: %s", s->source, jerr.line, jerr.text);
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        rc = err_set(e, "%s: missing, empty or non-object \"weight_map\"", s->source);
        goto done;
    }
    // Distinct shard names, in order of first appearance.
    const char **shards = xmalloc(json_object_size(wm) * sizeof *shards);
    int n_shards = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = err_set(e, "%s: weight_map[\"%s\"] is not a string", s->source, key);
            break;
        }
        const char *sh = json_string_value(v);
        if (!*sh || strchr(sh, '/') || !strcmp(sh, "..") || !strcmp(sh, ".")) {
            rc = err_set(e, "%s: weight_map[\"%s\"] = \"%s\" is not a file name in the checkpoint directory",
                         s->source, key, sh);
            break;
        }
        int seen = 0;
        for (int i = 0; i < n_shards && !seen; i++) seen = !strcmp(shards[i], sh);
        if (!seen) shards[n_shards++] = sh;
    }
    if (rc == 0) {
        s->files = xcalloc((size_t)n_shards, sizeof *s->files);
        for (int i = 0; i < n_shards && rc == 0; i++) {
            char path[4096];
            if (path_join(path, sizeof path, dir, shards[i]) != 0) {
                rc = err_set(e, "%s: shard path too long: %s", s->source, shards[i]);
                break;
            }
            if ((rc = st_open(&s->files[i], path, e)) != 0) break;
            s->n_files++;
        }
    }
    free(shards);
    if (rc == 0) rc = st_set_collect(s, e);
    // Every listed tensor is in the shard the index names; every stored tensor is listed.
    if (rc == 0) {
        json_object_foreach(wm, key, v) {
            const StTensor *t = st_set_find(s, key);
            if (!t) {
                rc = err_set(e, "%s: tensor '%s' is listed in shard %s but not stored there", s->source, key,
                             json_string_value(v));
                break;
            }
            if (strcmp(base_name(t->file), json_string_value(v)) != 0) {
                rc = err_set(e, "%s: tensor '%s' is listed in shard %s but stored in %s", s->source, key,
                             json_string_value(v), t->file);
                break;
            }
        }
    }
    for (int i = 0; rc == 0 && i < s->n_tensors; i++)
        if (!json_object_get(wm, s->tensors[i]->name))
            rc = err_set(e, "%s: tensor '%s' stored in %s is not listed in the index's weight_map", s->source,
                         s->tensors[i]->name, s->tensors[i]->file);
done:
    json_decref(root);
    return rc;
}

int st_set_open(StSet *s, const char *dir, Error *e) {
    memset(s, 0, sizeof *s);
    char single[4096];
    if (path_join(single, sizeof single, dir, "model.safetensors") != 0 ||
        path_join(s->source, sizeof s->source, dir, "model.safetensors.index.json") != 0)
        return err_set(e, "%s: path too long", dir);
    struct stat st;
    int rc;
    if (stat(single, &st) == 0) { // like transformers, a single file wins over an index
        snprintf(s->source, sizeof s->source, "%s", single);
        s->files = xcalloc(1, sizeof *s->files);
        rc = st_open(&s->files[0], single, e);
        if (rc == 0) {
            s->n_files = 1;
            rc = st_set_collect(s, e);
        }
    } else if (stat(s->source, &st) == 0) {
        rc = st_set_open_index(s, dir, e);
    } else {
        return err_set(e, "%s: no model.safetensors or model.safetensors.index.json in this directory", dir);
    }
    if (rc != 0) st_set_close(s);
    return rc;
}

void st_set_close(StSet *s) {
    for (int i = 0; i < s->n_files; i++) st_close(&s->files[i]);
    free(s->files);
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

const StTensor *st_set_find(const StSet *s, const char *name) {
    int i = st_set_index(s, &(StTensor){.name = (char *)name});
    return i < 0 ? NULL : s->tensors[i];
}

int st_set_index(const StSet *s, const StTensor *t) {
    const StTensor *key = t;
    const StTensor **hit = bsearch(&key, s->tensors, (size_t)s->n_tensors, sizeof *s->tensors,
                                   cmp_tensor_ptr_name);
    return hit ? (int)(hit - s->tensors) : -1;
}

// ---------------------------------------------------------------------------
// Writer

static int write_all(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

int st_write_f32(const char *path, const StWriteTensor *tensors, int n, Error *e) {
    json_t *root = json_object();
    CHECK(root, "json_object failed");
    // transformers checks this field to tell a PyTorch-layout file from others.
    json_t *meta = json_pack("{s:s}", "format", "pt");
    CHECK(meta && json_object_set_new(root, "__metadata__", meta) == 0, "json: building metadata failed");
    size_t offset = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const StWriteTensor *t = &tensors[i];
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            rc = err_set(e, "%s: tensor '%s': %d dimensions", path, t->name, t->ndim);
            break;
        }
        if (json_object_get(root, t->name)) {
            rc = err_set(e, "%s: tensor '%s' given twice", path, t->name);
            break;
        }
        json_t *shape = json_array();
        CHECK(shape, "json_array failed");
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) == 0, "json append failed");
            CHECK(size_mul_ok(numel, t->shape[d], &numel), "tensor %s: size overflow", t->name);
        }
        size_t nbytes = numel * sizeof(float);
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape, "data_offsets",
                                  (json_int_t)offset, (json_int_t)(offset + nbytes));
        CHECK(entry && json_object_set_new(root, t->name, entry) == 0, "json: building header entry failed");
        offset += nbytes;
    }
    char *header = rc == 0 ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (rc != 0) return rc;
    CHECK(header, "json_dumps failed");
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    AtomicFile af;
    if (atomic_open(&af, path, e) != 0) {
        free(header);
        return -1;
    }
    int ok = write_all(af.f, len_le, 8) && write_all(af.f, header, hl) && write_all(af.f, "       ", padded - hl);
    for (int i = 0; i < n && ok; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= tensors[i].shape[d];
        ok = write_all(af.f, tensors[i].data, numel * sizeof(float));
    }
    free(header);
    if (!ok) {
        int err = errno;
        atomic_abort(&af);
        return err_set(e, "%s: write failed: %s", path, strerror(err));
    }
    return atomic_commit(&af, e);
}
