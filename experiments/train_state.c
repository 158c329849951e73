// train_state.c: see train_state.h.
#include "experiments/train_state.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/checkpoint.h"

int text_write_atomic(const char *path, const char *text, Error *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    size_t n = strlen(text);
    if (fwrite(text, 1, n, af.f) != n) {
        atomic_abort(&af);
        return err_set(e, "%s: write failed: %s", path, strerror(errno));
    }
    return atomic_commit(&af, e);
}

int json_write_atomic(const char *path, json_t *root, Error *e) {
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    CHECK(text, "json_dumps failed");
    size_t n = strlen(text);
    text = xrealloc(text, n + 2);
    text[n] = '\n';
    text[n + 1] = 0;
    int rc = text_write_atomic(path, text, e);
    free(text);
    return rc;
}

int train_args_compare(json_t *saved, json_t *now, const char *path, Error *e) {
    const char *key;
    json_t *v;
    json_object_foreach(now, key, v) {
        json_t *s = json_object_get(saved, key);
        if (!s || !json_equal(s, v)) {
            char *a = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_REAL_PRECISION(7)) : NULL;
            char *b = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(7));
            err_set(e, "--resume: option \"%s\" of this command line is %s, but the interrupted run (%s) used %s; "
                    "resume with the same options", key, b ? b : "?", path, a ? a : "(absent)");
            free(a);
            free(b);
            return -1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// progress.json

static int progress_save(const TrainProgress *p, const char *path, Error *e) {
    json_t *o = json_object();
    json_object_set_new(o, "format", json_string("earnest-train-progress"));
    json_object_set_new(o, "version", json_integer(1));
    json_object_set_new(o, "epoch", json_integer(p->epoch));
    json_object_set_new(o, "batch", json_integer((json_int_t)p->batch));
    json_object_set_new(o, "step", json_integer(p->step));
    json_object_set_new(o, "total_steps", json_integer(p->total_steps));
    json_object_set_new(o, "save_serial", json_integer(p->save_serial));
    json_object_set_new(o, "best_recall@10", json_real(p->best));
    json_object_set_new(o, "best_epoch", json_integer(p->best_epoch));
    json_object_set_new(o, "bad_epochs", json_integer(p->bad_epochs));
    json_object_set_new(o, "epoch_loss_sum", json_real(p->ep_loss_sum));
    json_object_set_new(o, "epoch_labels", json_integer(p->ep_labels));
    json_object_set_new(o, "epoch_tokens", json_integer(p->ep_tokens));
    json_object_set_new(o, "elapsed_s", json_real(p->elapsed_s));
    json_object_set_new(o, "threads", json_integer(p->threads));
    json_object_set_new(o, "done", json_boolean(p->done));
    int rc = json_write_atomic(path, o, e);
    json_decref(o);
    return rc;
}

static int get_num(json_t *o, const char *key, double *out, const char *path, Error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || !json_is_number(v)) return err_set(e, "%s: field \"%s\" missing or not a number", path, key);
    *out = json_number_value(v);
    return 0;
}

int train_progress_load(TrainProgress *p, const char *path, int64_t total_steps, Error *e) {
    json_error_t je;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!o) return err_set(e, "%s:%d: %s", path, je.line, je.text);
    int rc = -1;
    json_t *fmt = json_object_get(o, "format");
    double v[13];
    const char *keys[13] = {"epoch", "batch", "step", "total_steps", "save_serial", "best_recall@10", "best_epoch",
                            "bad_epochs", "epoch_loss_sum", "epoch_labels", "epoch_tokens", "elapsed_s", "threads"};
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "earnest-train-progress")) {
        err_set(e, "%s: not an earnest training progress file (field \"format\")", path);
        goto done;
    }
    for (int i = 0; i < 13; i++)
        if (get_num(o, keys[i], &v[i], path, e)) goto done;
    memset(p, 0, sizeof *p);
    p->epoch = (int)v[0];
    p->batch = (size_t)v[1];
    p->step = (int64_t)v[2];
    p->total_steps = (int64_t)v[3];
    if (p->epoch < 0 || v[1] < 0 || p->step < 0 || p->total_steps != total_steps) {
        err_set(e, "%s: inconsistent progress (epoch %d, batch %.0f, step %lld, total steps %.0f; this run plans %lld "
                "steps)", path, p->epoch, v[1], (long long)p->step, v[3], (long long)total_steps);
        goto done;
    }
    p->save_serial = (int)v[4];
    p->best = v[5];
    p->best_epoch = (int)v[6];
    p->bad_epochs = (int)v[7];
    p->ep_loss_sum = v[8];
    p->ep_labels = (int64_t)v[9];
    p->ep_tokens = (int64_t)v[10];
    p->elapsed_s = v[11];
    p->threads = (int)v[12];
    p->done = json_is_true(json_object_get(o, "done"));
    rc = 0;
done:
    json_decref(o);
    return rc;
}

// ---------------------------------------------------------------------------
// State directories

// Removes every entry of OUT/state except LATEST and `keep`.
static void state_prune(const char *state_dir, const char *keep) {
    DIR *dp = opendir(state_dir);
    if (!dp) return;
    struct dirent *de;
    char path[4096 + 512];
    while ((de = readdir(dp))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "LATEST")) continue;
        if (keep && !strcmp(de->d_name, keep)) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", state_dir, de->d_name) < sizeof path) remove_tree(path);
    }
    closedir(dp);
}

int train_state_save(const char *state_dir, const Model *m, const AdamWState *opt, const TrainProgress *p, Error *e) {
    char name[64], dir[4200], tmp[4300], path[4400];
    snprintf(name, sizeof name, "save-%06d", p->save_serial);
    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", state_dir, name) >= sizeof dir)
        return err_set(e, "%s: path too long", state_dir);
    atomic_tmp_path(tmp, sizeof tmp, dir);
    remove_tree(tmp);
    if (model_save(m, tmp, e)) return -1;
    snprintf(path, sizeof path, "%s/optimizer.bin", tmp);
    if (adamw_save(opt, path, e)) return -1;
    snprintf(path, sizeof path, "%s/progress.json", tmp);
    if (progress_save(p, path, e)) return -1;
    if (rename_into_place(tmp, dir, e)) return -1;
    snprintf(path, sizeof path, "%s/LATEST", state_dir);
    char line[80];
    snprintf(line, sizeof line, "%s\n", name);
    if (text_write_atomic(path, line, e)) return -1;
    state_prune(state_dir, name);
    return 0;
}

int train_state_latest(char *out, size_t n, const char *state_dir, Error *e) {
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/LATEST", state_dir) >= sizeof path)
        return err_set(e, "%s: path too long", state_dir);
    char *text = NULL;
    if (file_read_all(path, &text, NULL, e))
        return err_prefix(e, "--resume: no resumable state (the run never saved one, or OUT is not a training "
                          "directory): ");
    text[strcspn(text, "\r\n")] = 0;
    int rc = 0;
    struct stat st;
    if (!text[0] || strchr(text, '/')) rc = err_set(e, "%s: does not name a state directory", path);
    else if ((size_t)snprintf(out, n, "%s/%s", state_dir, text) >= n) rc = err_set(e, "%s: path too long", state_dir);
    else if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode)) rc = err_set(e, "%s: names %s, which does not exist", path, out);
    free(text);
    return rc;
}

// ---------------------------------------------------------------------------
// Logs

// Keeps the header and the rows whose `col`-th field (0-based) is <= max_step, atomically.
static int log_truncate(const char *path, int col, int64_t max_step, const char *header, Error *e) {
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return text_write_atomic(path, header, e);
    if (file_read_all(path, &text, &len, e)) return -1;
    AtomicFile af;
    if (atomic_open(&af, path, e)) { free(text); return -1; }
    char *line = text;
    int first = 1;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (!nl) break; // a partial last line (killed mid-write): dropped
        *nl = 0;
        int keep = first;
        if (!first) {
            const char *f = line;
            for (int c = 0; c < col && f; c++) {
                f = strchr(f, ',');
                if (f) f++;
            }
            keep = f && strtoll(f, NULL, 10) <= max_step;
        }
        if (keep) fprintf(af.f, "%s\n", line);
        first = 0;
        line = nl + 1;
    }
    free(text);
    if (ferror(af.f)) { atomic_abort(&af); return err_set(e, "%s: write failed", path); }
    return atomic_commit(&af, e);
}

int train_log_open(FILE **f, const char *path, const char *header, int fresh, int step_col, int64_t max_step,
                   Error *e) {
    if (fresh ? text_write_atomic(path, header, e) : log_truncate(path, step_col, max_step, header, e)) return -1;
    if (!(*f = fopen(path, "a"))) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    return 0;
}
