// dataset.h: a prepared dataset directory, loaded into memory: the one type
// every tool uses for it and the one reader of its files. The writer is
// prep_write_dir (datasets/prepare.h), which writes this same type.
//
// The directory (written by `earnest prepare` / Makefile.data):
//   meta.json   {"format": "earnest-dataset", "version": 1, "name", "source"?,
//                "n_users", "n_items", "code_levels", "codes_per_level": [...],
//                "seed"?, "codes_method"?, "semantic_ids"?: {"levels", "codes",
//                "dim", "window", "iters", "power_iters", "seed"},
//                "interactions"?: {"train", "valid", "test"}}
//   train.txt valid.txt test.txt
//               one line per user 1..n_users, in order: "uid item item ..."
//               (1-based ids, chronological; a user with nothing in a split
//               has a bare "uid" line)
//   codes.tsv   one line per item 1..n_items, in order: "item<TAB><a_12><b_3>..."
//               (level letters a, b, c, ...; the number is the index in that level)
//
// Loading is strict: every malformed line is an error naming file:line, every
// bad meta.json field an error naming the field, a key given twice in meta.json
// an error naming the key.
// Ids are 1-based everywhere, as in the files; arrays indexed by id have an
// unused row 0.
#ifndef EARNEST_DATASET_H
#define EARNEST_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/semantic_ids.h"
#include "runtime/util.h"

#define DATASET_MAX_LEVELS 8          // level letters 'a'..'h'
#define DATASET_MAX_CODES 1000000     // per level
#define DATASET_MAX_IDS 100000000     // users or items
#define DATASET_CODE_STR_MAX 160      // room for DATASET_MAX_LEVELS tokens "<h_999999>"

typedef enum { SPLIT_TRAIN = 0, SPLIT_VALID = 1, SPLIT_TEST = 2, SPLIT_COUNT = 3 } Split;

// One split in CSR form: user u's items are items[offsets[u-1] .. offsets[u]).
typedef struct {
    size_t *offsets;   // [n_users + 1]
    int *items;        // [offsets[n_users]] 1-based item ids, chronological
} DatasetSplit;

typedef struct {
    char name[128];
    char source[1024];
    char codes_method[64]; // "lcrec-rqvae" (AtSpeed release), "earnest-rkmeans"; "unknown" if not given
    int has_seed;
    uint64_t seed;         // meta.json "seed": the --seed of generated data and codes
    int has_semid;         // meta.json "semantic_ids": the settings of codes built here
    SemIdConfig semid;
    int n_users, n_items;
    int code_levels;
    int codes_per_level[DATASET_MAX_LEVELS];
    DatasetSplit splits[SPLIT_COUNT];
    int *codes;        // [(n_items + 1) * code_levels] index within each level; row 0 unused
} Dataset;

int dataset_load(Dataset *d, const char *dir, Error *e);
void dataset_free(Dataset *d);

// User u's items in a split (u in 1..n_users); *n receives the count.
const int *dataset_user_items(const Dataset *d, Split s, int user, int *n);
size_t dataset_interactions(const Dataset *d, Split s);
// Item `item`'s code row: code_levels indices.
const int *dataset_item_code(const Dataset *d, int item);
// "<a_58><b_241><c_151><d_175>": the string form used in rankings and for
// comparing codes. Returns its length; out must hold DATASET_CODE_STR_MAX.
int dataset_code_string(char *out, const Dataset *d, int item);

const char *split_name(Split s);               // "train", "valid", "test"
int split_parse(const char *name, Split *s);   // 0 ok, -1 unknown name

// The parsers behind dataset_load, on text already in memory (the fuzz
// harnesses call these). `path` only names the file in messages. On success
// the outputs are allocated (free them with free()); on failure nothing is.
int dataset_parse_split(DatasetSplit *out, const char *text, size_t len, const char *path,
                        int n_users, int n_items, Error *e);
// codes_out: [(n_items + 1) * code_levels]
int dataset_parse_codes(int **codes_out, const char *text, size_t len, const char *path,
                        int n_items, int code_levels, const int *codes_per_level, Error *e);
// meta.json: every field into d (name, sizes, codes_per_level, ...; d is not
// cleared first) and expect[s], the optional "interactions" count of split s
// (-1 when absent), which dataset_load checks against the split files.
int dataset_parse_meta(Dataset *d, long long expect[SPLIT_COUNT], const char *text, size_t len,
                       const char *path, Error *e);

// Parses JSON text (not NUL-terminated) for the dataset readers (meta.json, the
// LC-Rec code map). A key given twice in one object is an error naming the file,
// the line and the key: jansson would silently keep the last value. On success
// *root is a new reference (json_decref it).
struct json_t;
int dataset_json_parse(struct json_t **root, const char *text, size_t len, const char *path, Error *e);

// One code token "<x_N>" of level `level` (x = 'a' + level) at the start of
// [p, end): N decimal, no leading zero (codes are compared as strings, so
// "<a_07>" would be another code than "<a_7>"), N < n_codes. On CODE_TOKEN_OK
// *idx = N and *after points past the '>'; on CODE_TOKEN_RANGE *idx holds N
// (saturated above DATASET_MAX_CODES). The callers word the messages (codes.tsv
// names file:line, the LC-Rec code map its key).
typedef enum {
    CODE_TOKEN_OK = 0,
    CODE_TOKEN_MALFORMED,    // not '<', the level letter, '_', a digit
    CODE_TOKEN_LEADING_ZERO,
    CODE_TOKEN_NO_CLOSE,     // the digits are not followed by '>'
    CODE_TOKEN_RANGE,        // N >= n_codes
} CodeTokenStatus;
CodeTokenStatus dataset_parse_code_token(const char *p, const char *end, int level, int n_codes, int *idx,
                                         const char **after);

#endif
