// fuzz_st_index.c: libFuzzer harness for a sharded checkpoint's
// model.safetensors.index.json (st_set_open, runtime/safetensors.h). The index
// is read from a checkpoint directory, so the harness makes one (in /dev/shm
// when there is one) holding two small shards, a.safetensors (tensors x, y)
// and b.safetensors (tensor z), and writes each input there as the index.
// On success every stored tensor of the shards it names must be found by name,
// in the shard the index names.
// Build and run: tests/run_fuzz.sh.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64], index_path[128];

static void write_shard(const char *name, const StWriteTensor *t, int n) {
    char path[128];
    Error e;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (st_write_f32(path, t, n, &e) != 0) {
        fprintf(stderr, "fuzz_st_index: %s\n", e.msg);
        abort();
    }
}

static void remove_dir(void) {
    static const char *FILES[3] = {"a.safetensors", "b.safetensors", "model.safetensors.index.json"};
    char path[128];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, FILES[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void make_dir(void) {
    if (dir[0]) return;
    snprintf(dir, sizeof dir, "%s/fuzz_st_index_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir)) abort();
    atexit(remove_dir);
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    static const float v[6] = {1, 2, 3, 4, 5, 6};
    StWriteTensor a[2] = {{"x", 2, {2, 2}, v}, {"y", 1, {1}, v + 4}}, b[1] = {{"z", 1, {2}, v}};
    write_shard("a.safetensors", a, 2);
    write_shard("b.safetensors", b, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    make_dir();
    FILE *f = fopen(index_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    StSet s;
    Error e;
    if (st_set_open(&s, dir, &e) == 0) {
        if (s.n_files < 1 || s.n_files > 2 || s.n_tensors < 1 || s.n_tensors > 3) abort();
        for (int i = 0; i < s.n_tensors; i++) {
            const StTensor *t = s.tensors[i];
            if (st_set_find(&s, t->name) != t || st_set_index(&s, t) != i) abort();
            if (strcmp(t->name, "z") ? !strstr(t->file, "/a.safetensors") : !strstr(t->file, "/b.safetensors"))
                abort();
        }
        st_set_close(&s);
    }
    return 0;
}
