// teacher.h: the teacher file of draft-model distillation (AtSpeed, issue 12):
// what the target model says about every train sample, computed once by
// `earnest teacher` and read by `earnest train --method draft --teacher FILE
// --kd LOSS` for every loss.
//
// Per train sample (history = the items before train position `pos`, target
// = the item at `pos`; datasets/samples.h), from the target's own prompt:
//   - its constrained beam search (runtime/beam.h semantics, width W = 20):
//     the W beams' code tokens, scores, and the log-probability of each
//     beam token at each step (full-vocabulary log_softmax; the steps sum to
//     the score);
//   - its distribution at every node of the tree those beams and the ground
//     truth form: a node is a (level j, code prefix of j tokens); the node's
//     row holds the target's log-probabilities (full-vocabulary log_softmax,
//     temperature 1) of every code token of level j (the level's "code
//     vocabulary": <a_*> for j = 0, <b_*> for j = 1, ...). Nodes are shared:
//     the root (j = 0, the prompt's last row) once, and a prefix that several
//     beams (or the ground truth) share once.
// WordKD/TVDKD read the ground-truth nodes, SeqKD the beams, AtSpeed-S/R the
// beam nodes; the mass a node leaves outside its level's codes is
// 1 - sum(exp(row)) (what kd_loss.h calls the rest bucket).
//
// File layout (little-endian):
//   line 1   "earnest-teacher 1\n"
//   line 2   one JSON object, then "\n": format, version, dataset {name,
//            users, items, train_interactions, sha256 (of the train split and
//            the item codes as loaded)}, model {dir, sha256 of
//            model.safetensors, method, layers, dim, template, prefix_regs,
//            suffix_regs}, vocab {size, sha256 of the token spellings},
//            levels, level_tokens [[ids of level 0], ...], beam (W),
//            max_history, users (users covered: the first N with train
//            targets, all by default), samples, records_bytes,
//            records_sha256
//   records  `samples` records, by user then position, each:
//            int32 user, pos, item, n_beams, n_nodes, 0
//            int32 gt[L]                       the ground-truth code tokens
//            int32 beam[n_beams][L]            best first
//            float32 score[n_beams]
//            float32 step_logprob[n_beams][L]
//            int32 gt_node[L]                  node of each ground-truth level
//            int32 beam_node[n_beams][L]       node of each beam level
//            int32 node_level[n_nodes]
//            float32 node_logprob[...]         node i: |level_tokens[node_level[i]]|
//                                              values, in level_tokens order
// A reader checks everything: the first line, the header's fields, that the
// records are exactly records_bytes long (a truncated file is named as
// such) with that sha256, every index and token in range; and, against the
// training run, the dataset fingerprint, the vocabulary, and that each
// record's item is the train item at (user, pos) with that code.
#ifndef EARNEST_TEACHER_H
#define EARNEST_TEACHER_H

#include <stddef.h>

#include "datasets/dataset.h"
#include "datasets/vocab.h"
#include "runtime/util.h"

#define TEACHER_MAX_LEVELS 8

typedef struct {
    int user, pos, item;
    int n_beams, n_nodes;
    const int *gt;          // [L]
    const int *beam;        // [n_beams * L]
    const float *score;     // [n_beams]
    const float *step_lp;   // [n_beams * L]
    const int *gt_node;     // [L]
    const int *beam_node;   // [n_beams * L]
    const int *node_level;  // [n_nodes]
    const float **node_lp;  // [n_nodes] pointers into the file's data
} TeacherRecord;

typedef struct {
    char path[4096];
    char dataset_name[128];
    int n_users, n_items;
    long long train_interactions;
    char data_sha[65], model_sha[65], vocab_sha[65], records_sha[65];
    char model_dir[4096];
    int vocab_size, levels, beam, max_history, users;
    int level_size[TEACHER_MAX_LEVELS];
    int *level_tokens[TEACHER_MAX_LEVELS];
    size_t n_records;
    TeacherRecord *rec;
    char *data;             // the file's bytes (records point into it)
    const float **node_ptrs;
    int *rec_of;            // [train interactions] record of (user, pos) at offsets[user-1] + pos, or -1
    size_t rec_of_n;
} Teacher;

// Options of `earnest teacher`.
typedef struct {
    const char *model_dir, *data_dir, *out;
    const char *tmpl;       // NULL: the model's
    int beam;               // 20
    int users;              // 0: all
    int max_history;        // 20
    int batch;              // samples per beam-search call
    int threads;
    int progress;
} TeacherOptions;

// Generates the file (atomically). -1 with e set on bad input.
int teacher_generate(const TeacherOptions *o, Error *e);

// Reads and checks a teacher file on its own.
int teacher_load(Teacher *t, const char *path, Error *e);
void teacher_free(Teacher *t);
// Checks that the file was made on dataset d with vocabulary v (the student's)
// and fills t->rec_of. Names the field that differs.
int teacher_check_fits(Teacher *t, const Dataset *d, const Vocab *v, Error *e);
// The record of train sample (user, pos), or NULL.
const TeacherRecord *teacher_find(const Teacher *t, const Dataset *d, int user, int pos);

// The fingerprints the header records.
void teacher_data_sha(char hex[65], const Dataset *d);
void teacher_vocab_sha(char hex[65], const Vocab *v);

#endif
