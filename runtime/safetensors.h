// safetensors.h: reading and writing Hugging Face .safetensors files.
//
// File layout: an 8-byte little-endian header length N, then N bytes of JSON
//   {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [a, b],
//    "data_offsets": [begin, end]}, ...}
// then the data section; offsets are relative to the data section's start.
//
// The reader maps the file read-only and checks everything before handing out
// a tensor: header inside the file, known dtype (F32, BF16, F16), byte count
// = numel x dtype size, offsets inside the data section, no overlaps and no
// holes (the reference implementation rejects both, so a file with either
// would not load in transformers either). Tensors are converted to float32 on
// copy. A checkpoint directory may hold one model.safetensors or an index
// (model.safetensors.index.json) naming several shards.
#ifndef EARNEST_SAFETENSORS_H
#define EARNEST_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/util.h"

#define ST_MAX_DIMS 8

typedef enum {
    ST_F32 = 0,
    ST_BF16 = 1,
    ST_F16 = 2,
} StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    size_t shape[ST_MAX_DIMS];
    size_t numel;
    const uint8_t *data; // into the mapped file; not aligned in general
    size_t nbytes;
    const char *file;    // path of the file that holds it (owned by its StFile)
} StTensor;

// One mapped .safetensors file.
typedef struct {
    char path[4096];
    void *map;
    size_t map_size;
    StTensor *tensors; // [n_tensors], sorted by name
    int n_tensors;
} StFile;

int st_open(StFile *f, const char *path, Error *e);
// The parser behind st_open, on a file's len bytes in memory (the fuzz harness
// calls it): the tensors point into data, which must outlive f; f->map stays
// NULL, so st_close frees only the table. `path` names the file in messages.
int st_parse_mem(StFile *f, const void *data, size_t len, const char *path, Error *e);
void st_close(StFile *f);
const StTensor *st_file_find(const StFile *f, const char *name);

// Every tensor of a checkpoint directory, across shards.
typedef struct {
    StFile *files;      // [n_files]
    int n_files;
    const StTensor **tensors; // [n_tensors] into files, sorted by name
    int n_tensors;
    char source[4096];  // model.safetensors or the index file, for messages
} StSet;

// Opens DIR/model.safetensors, or else DIR/model.safetensors.index.json and
// its shards. A tensor listed in the index must live in the shard it names;
// a tensor found in two shards is an error.
int st_set_open(StSet *s, const char *dir, Error *e);
void st_set_close(StSet *s);
const StTensor *st_set_find(const StSet *s, const char *name);
int st_set_index(const StSet *s, const StTensor *t); // position in s->tensors, or -1

const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);
// "[a, b, c]" into buf (for messages); returns buf.
const char *st_shape_str(char *buf, size_t n, const size_t *shape, int ndim);

// Copies tensor t into out[numel] as float32 (exact for bf16 and f16).
void st_tensor_to_f32(float *out, const StTensor *t);

// Writer: float32 tensors, in the order given, atomically (temp + rename).
typedef struct {
    const char *name;
    int ndim;
    size_t shape[ST_MAX_DIMS];
    const float *data; // [prod(shape)]
} StWriteTensor;

int st_write_f32(const char *path, const StWriteTensor *tensors, int n, Error *e);

#endif
