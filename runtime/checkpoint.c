// checkpoint.c: see checkpoint.h. A model directory in Hugging Face layout
// <-> a Model whose parameters live in one allocation (per-layer HF tensors
// are stacked along a leading layer axis there).
#include "runtime/checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/safetensors.h"

// The HF name of tensor `info` in layer `layer` (per-layer names carry a "%d").
static void param_name(char *out, size_t n, const ParamTensorInfo *info, int layer) {
    if (info->per_layer) snprintf(out, n, info->hf_name, layer);
    else snprintf(out, n, "%s", info->hf_name);
}

static int shape_matches(const StTensor *t, const ParamTensorInfo *info) {
    if (t->ndim != info->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != info->shape[d]) return 0;
    return 1;
}

static int check_shape(const StTensor *t, const ParamTensorInfo *info, Error *e) {
    if (shape_matches(t, info)) return 0;
    char found[256], want[256];
    return err_set(e, "%s: tensor '%s' has shape %s, expected %s from config.json", t->file, t->name,
                   st_shape_str(found, sizeof found, t->shape, t->ndim),
                   st_shape_str(want, sizeof want, info->shape, info->ndim));
}

// Buffers transformers itself recomputes; old Llama checkpoints carry them.
static int is_ignorable(const char *name) {
    int layer, end = -1;
    sscanf(name, "model.layers.%d.self_attn.rotary_emb.inv_freq%n", &layer, &end);
    return end >= 0 && (size_t)end == strlen(name);
}

// Finds every tensor the config asks for and checks its shape, before
// anything is allocated (a config that does not fit the file, however
// absurd its sizes, fails here); marks the ones used.
static int check_params(const ModelConfig *c, const StSet *set, uint8_t *used, Error *e) {
    char name[512];
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        int tied_head = t == 14 && c->tie_embeddings; // a stored copy is accepted (transformers ignores it too)
        if (info.numel == 0 && !tied_head) continue;  // absent in this config (biases of Llama)
        int n = info.per_layer ? c->n_layers : 1;
        for (int l = 0; l < n; l++) {
            param_name(name, sizeof name, &info, l);
            const StTensor *st = st_set_find(set, name);
            if (!st && tied_head) break;
            if (!st) {
                char want[256];
                return err_set(e, "%s: tensor '%s' (shape %s) is missing", set->source, name,
                               st_shape_str(want, sizeof want, info.shape, info.ndim));
            }
            if (check_shape(st, &info, e) != 0) return -1;
            used[st_set_index(set, st)] = 1;
        }
    }
    return 0;
}

// The first non-finite value of n floats, or -1.
static long first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long)i;
    return -1;
}

// Copies every tensor the config asks for into m (check_params passed).
static int load_params(Model *m, const StSet *set, int allow_nonfinite, Error *e) {
    const ModelConfig *c = &m->config;
    char name[512];
    for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
        ParamTensorInfo info;
        model_param_info(c, t, &info);
        if (info.numel == 0) continue; // absent, or lm_head when tied
        size_t per = info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
        int n = info.per_layer ? c->n_layers : 1;
        float *slot = *model_param_slot(&m->params, t);
        for (int l = 0; l < n; l++) {
            param_name(name, sizeof name, &info, l);
            const StTensor *st = st_set_find(set, name);
            CHECK(st, "load_params: tensor %s passed check_params but is missing", name);
            st_tensor_to_f32(slot + (size_t)l * per, st);
            long bad = allow_nonfinite ? -1 : first_nonfinite(slot + (size_t)l * per, per);
            if (bad >= 0)
                return err_set(e, "%s: tensor '%s' holds a non-finite value (%g at flat index %ld): a diverged or "
                               "corrupt model; --allow-nonfinite loads it anyway", st->file, name,
                               (double)slot[(size_t)l * per + (size_t)bad], bad);
        }
    }
    return 0;
}

// Every stored tensor must have been used: a stray one means the file and
// the config disagree (wrong layer count, bias on a Llama, ...).
static int check_unused(const StSet *set, const uint8_t *used, const ModelConfig *c, Error *e) {
    int n_bad = 0;
    char list[1024] = "";
    size_t at = 0;
    for (int i = 0; i < set->n_tensors; i++) {
        if (used[i] || is_ignorable(set->tensors[i]->name)) continue;
        if (n_bad < 4 && at < sizeof list)
            at += (size_t)snprintf(list + at, sizeof list - at, "%s'%s'", n_bad ? ", " : "", set->tensors[i]->name);
        n_bad++;
    }
    if (n_bad == 0) return 0;
    return err_set(e, "%s: %d unexpected tensor%s not part of a %s with %d layers%s: %s%s", set->source, n_bad,
                   n_bad > 1 ? "s" : "", config_arch_name(c->arch), c->n_layers,
                   c->tie_embeddings ? " and tied embeddings" : "", list, n_bad > 4 ? ", ..." : "");
}

int model_load(Model *m, const char *dir, Error *e) { return model_load_flags(m, dir, 0, e); }

int model_load_flags(Model *m, const char *dir, unsigned flags, Error *e) {
    memset(m, 0, sizeof *m);
    char path[4096];
    if (path_join(path, sizeof path, dir, "config.json") != 0) return err_set(e, "%s: path too long", dir);
    ModelConfig c;
    if (config_load(&c, path, e) != 0) return -1; // config_load validates
    StSet set;
    if (st_set_open(&set, dir, e) != 0) return -1;
    uint8_t *used = xcalloc((size_t)set.n_tensors + 1, 1);
    int rc = check_params(&c, &set, used, e);
    if (rc == 0) rc = check_unused(&set, used, &c, e);
    free(used);
    if (rc == 0) { // the file holds exactly what the config describes: now allocate
        model_alloc(m, &c);
        rc = load_params(m, &set, (flags & MODEL_LOAD_ALLOW_NONFINITE) != 0, e);
        if (rc != 0) model_free(m);
    }
    st_set_close(&set);
    return rc;
}

int model_save(const Model *m, const char *dir, Error *e) {
    const ModelConfig *c = &m->config;
    if (config_validate(c, dir, e) != 0) return -1;
    if (make_dirs(dir, e) != 0) return -1;
    // One entry per HF tensor, in HF order: embeddings, layer 0 .. L-1, final norm, lm_head.
    int cap = 2 + 1 + MODEL_N_PARAM_TENSORS * c->n_layers;
    StWriteTensor *list = xcalloc((size_t)cap, sizeof *list);
    char (*names)[256] = xcalloc((size_t)cap, sizeof *names);
    ModelParams *p = (ModelParams *)&m->params; // only read: the slots are shared with the writer
    int n = 0;
    for (int pass = 0; pass < 3; pass++) { // 0: before the layers, 1: the layers, 2: after
        for (int l = 0; l < (pass == 1 ? c->n_layers : 1); l++) {
            for (int t = 0; t < MODEL_N_PARAM_TENSORS; t++) {
                ParamTensorInfo info;
                model_param_info(c, t, &info);
                if (info.numel == 0) continue; // absent, or lm_head when tied
                int where = info.per_layer ? 1 : (t == 0 ? 0 : 2);
                if (where != pass) continue;
                size_t per = info.ndim == 2 ? info.shape[0] * info.shape[1] : info.shape[0];
                StWriteTensor *w = &list[n];
                param_name(names[n], sizeof names[n], &info, l);
                w->name = names[n];
                w->ndim = info.ndim;
                w->shape[0] = info.shape[0];
                w->shape[1] = info.shape[1];
                w->data = *model_param_slot(p, t) + (size_t)l * per;
                n++;
            }
        }
    }
    CHECK(n <= cap, "model_save: %d tensors, room for %d", n, cap);
    char path[4096];
    int rc = path_join(path, sizeof path, dir, "model.safetensors") != 0 ? err_set(e, "%s: path too long", dir)
             : st_write_f32(path, list, n, e);
    free(list);
    free(names);
    if (rc != 0) return -1;
    if (path_join(path, sizeof path, dir, "config.json") != 0) return err_set(e, "%s: path too long", dir);
    return config_save(c, path, e);
}
