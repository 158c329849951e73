// prepare.h: producing prepared dataset directories (the `earnest prepare` verbs).
//
// The prepared directory and its in-memory form, Dataset, are defined in
// datasets/dataset.h, whose dataset_load is the one reader of it;
// prep_write_dir below is its one writer, from a Dataset. A directory is
// always written whole into DIR.tmp.PID and renamed into place, so a failure
// leaves an existing DIR untouched and no partial directory behind.
//
// Sources:
//   - the AtSpeed release (sequential_{train,valid,test}.txt + <name>.LCRec-1e-3lr.json),
//     copied as is after strict validation (prep_read_atspeed);
//   - raw interaction logs (Amazon 5-core JSON lines, MovieLens ratings.dat) and the
//     synthetic generator, which go through one pipeline (prep_split, in prep_raw.c):
//       1. keep rating >= 4 (the parsers drop the rest);
//       2. stable sort by timestamp; ties keep input order (line order in the file,
//          generation order for synthetic data);
//       3. split the global timeline by interaction count: the first floor(0.8 n) are
//          train, up to floor(0.9 n) valid, the rest test;
//       4. drop users with fewer than 2 train interactions, from every split;
//       5. dense 1-based ids: users in order of their first train interaction;
//          items in order of first appearance in the sorted train part, then items
//          first seen in valid, then in test (all items of kept users are kept; items
//          that never occur in train get codes from the embedding fallback of
//          semantic_ids.c). Repeated (user, item) interactions are kept as they are.
//     then semantic IDs (semantic_ids.h) from the train split.
#ifndef EARNEST_PREPARE_H
#define EARNEST_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include "datasets/dataset.h"
#include "datasets/semantic_ids.h"
#include "runtime/util.h"

// Sets the dataset's name and source (meta.json "name", "source").
void prep_set_meta(Dataset *d, const char *name, const char *source);

// Reads and validates the AtSpeed release files in src_dir into d (splits,
// codes; codes_method "lcrec-rqvae"; name and source are left to the caller).
// Every error names the file and line (text files) or the key (code map).
int prep_read_atspeed(Dataset *d, const char *src_dir, const char *name, Error *e);
// Parses one AtSpeed sequential_*.txt file already in memory: "uid item item ..."
// lines, users 1..n in order (n is whatever the file holds: *n_users), blanks
// around ids and a blank last line tolerated. Items must be in 1..max_item
// (max_item < 0: any positive id; *max_seen, if not NULL, gets the largest seen).
// `path` only names the file in messages. On failure nothing is allocated.
int prep_parse_seq_text(DatasetSplit *out, int *n_users, int *max_seen, const char *text, size_t len,
                        const char *path, int max_item, Error *e);
// Parses an LC-Rec code map {"<id-1>": ["<a_x>", "<b_y>", ...]} already in memory
// into d->codes (row 0 unused), d->code_levels, d->codes_per_level (all
// codes_per_level_max) and d->n_items. Keys must be exactly 0..n-1, each given
// once; every list must have the same length (<= DATASET_MAX_LEVELS) and level
// l's token must be a code token (dataset_parse_code_token) <letter_l_N> with
// N < codes_per_level_max.
int prep_parse_code_json(Dataset *d, const char *text, size_t len, const char *path, int codes_per_level_max,
                         Error *e);

// Writes d as a prepared directory atomically (DIR.tmp.PID, then rename):
// meta.json from d's fields (and the interaction counts), the splits, codes.tsv.
int prep_write_dir(const char *dir, const Dataset *d, Error *e);

// Builds codes for d's items from its train split (semantic_ids.h), replacing
// d's codes, and records how (codes_method "earnest-rkmeans", seed, semid).
void prep_build_codes(Dataset *d, const SemIdConfig *cfg);

// ---- raw interaction logs (prep_raw.c) ----------------------------------------

typedef enum { RAW_AMAZON = 0, RAW_MOVIELENS = 1 } RawFormat;

typedef struct {
    int user, item; // indices into the log's user and item name tables (0-based)
    int64_t ts;
    size_t order;   // input order (line number), the tie-break for equal timestamps
} RawEvent;

typedef struct {
    RawEvent *ev;
    size_t n, cap;
    int n_users, n_items;          // distinct names seen (in kept events)
    size_t n_lines, n_low_rating;  // lines parsed, events dropped for rating < 4
    void *names;                   // private: name -> index tables (NULL for synthetic logs)
} RawLog;

void raw_log_init(RawLog *log);
void raw_log_free(RawLog *log);
void raw_log_push(RawLog *log, int user, int item, int64_t ts);
int raw_format_parse(const char *s, RawFormat *f);
// Parses text already in memory (the fuzz harnesses call this); `path` names the
// file in messages. Lines may end in \n or \r\n; blank lines are errors.
int raw_parse_buf(RawLog *log, RawFormat fmt, const char *buf, size_t len, const char *path,
                  Error *e);
// Reads a file (plain or gzip-compressed, detected by zlib) line by line.
int raw_read_file(RawLog *log, RawFormat fmt, const char *path, Error *e);
// The pipeline steps 2-5 above, into out's n_users, n_items and splits (the rest
// zeroed; no codes yet). Fails when no user survives. item_raw (optional)
// receives a malloc'ed [n_items + 1] array: the log's item index of dense item i
// (row 0 unused).
int prep_split(Dataset *out, int **item_raw, const RawLog *log, Error *e);

// ---- synthetic data (prep_synthetic.c) ---------------------------------------

typedef struct {
    int n_users, n_items, n_clusters;
    int min_len, max_len; // interactions per user, before the split
    float p_follow;       // P(next item = the planted successor of the current item)
    float p_stay;         // P(next item = a uniform item of the current item's cluster);
                          // the rest (1 - p_follow - p_stay): an item drawn by popularity
    uint64_t seed;
} SynthConfig;

void synth_config_default(SynthConfig *c);
int synth_check(const SynthConfig *c, Error *e);
// A log with planted structure: items live in clusters, clusters form a cycle,
// and every item has a fixed successor item in the next cluster of the cycle.
// A user starts at a popular item and walks: successor (p_follow), same cluster
// (p_stay) or a popular item. Timestamps: uniform over one global range, sorted
// per user, so every user spans the whole timeline and the global split leaves
// most users with valid and test items.
// item_cluster (optional, [n_items]) receives each raw item's cluster.
void synth_generate(RawLog *log, int *item_cluster, const SynthConfig *c);

#endif
