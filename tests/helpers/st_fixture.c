// st_fixture.c: see st_fixture.h.
#include "helpers/st_fixture.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/util.h"

void st_fixture_write_raw(const char *path, uint64_t header_len, const char *header, const void *data,
                          size_t nbytes) {
    FILE *f = fopen(path, "wb");
    CHECK(f, "%s: %s", path, strerror(errno));
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(header_len >> (8 * i));
    size_t hl = strlen(header);
    CHECK(fwrite(le, 1, 8, f) == 8, "%s: write failed", path);
    CHECK(hl == 0 || fwrite(header, 1, hl, f) == hl, "%s: write failed", path);
    CHECK(nbytes == 0 || fwrite(data, 1, nbytes, f) == nbytes, "%s: write failed", path);
    CHECK(fclose(f) == 0, "%s: close failed", path);
}

void st_fixture_write(const char *path, const StFixtureTensor *t, int n) {
    json_t *root = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < t[i].ndim; d++) json_array_append_new(shape, json_integer((json_int_t)t[i].shape[d]));
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", t[i].dtype, "shape", shape, "data_offsets",
                                  (json_int_t)off, (json_int_t)(off + t[i].nbytes));
        CHECK(entry && json_object_set_new(root, t[i].name, entry) == 0, "json failed");
        off += t[i].nbytes;
    }
    char *h = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    CHECK(h, "json_dumps failed");
    size_t hl = strlen(h), padded = (hl + 7) / 8 * 8;
    char *hp = xmalloc(padded + 1);
    memcpy(hp, h, hl);
    memset(hp + hl, ' ', padded - hl);
    hp[padded] = 0;
    free(h);
    uint8_t *data = xmalloc(off + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes) memcpy(data + at, t[i].data, t[i].nbytes);
        at += t[i].nbytes;
    }
    st_fixture_write_raw(path, padded, hp, data, off);
    free(hp);
    free(data);
}

void st_fixture_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f, "%s: %s", path, strerror(errno));
    CHECK(fputs(text, f) >= 0 && fclose(f) == 0, "%s: write failed", path);
}

char *st_fixture_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/earnest-test-XXXXXX", base && *base ? base : "/tmp");
    CHECK(mkdtemp(buf), "mkdtemp %s: %s", buf, strerror(errno));
    return xstrdup(buf);
}

int st_fixture_contains(const char *haystack, const char *needle) {
    if (strstr(haystack, needle)) return 1;
    fprintf(stderr, "expected the message to contain \"%s\"\n  message: %s\n", needle, haystack);
    return 0;
}
