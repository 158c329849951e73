// atomic.h: the output discipline of every earnest tool.
//
//  - An output is written to "<path>.tmp.<pid>" and renamed over <path> only
//    when complete, so a reader sees the previous complete file or the new
//    one, never a half-written one.
//  - Temporaries are registered while they exist: on SIGINT/SIGTERM
//    (output_signals_install) they are removed before the process dies, and a
//    later writer of the same path removes the temporaries of dead processes
//    (a SIGKILL leaves them behind).
//  - A directory is replaced by an atomic exchange (renameat2
//    RENAME_EXCHANGE), so a kill at any moment leaves either the old or the
//    new directory at its name.
//  - One writer per output: output_lock takes an exclusive lock that the
//    kernel drops when the process dies, and names the holder's PID to a
//    second writer ("... is in use by PID N").
#ifndef EARNEST_ATOMIC_H
#define EARNEST_ATOMIC_H

#include <stdio.h>

#include "runtime/util.h"

typedef struct {
    FILE *f;
    char path[4096];
    char tmp[4200];
} AtomicFile;
int atomic_open(AtomicFile *af, const char *path, Error *e);
int atomic_commit(AtomicFile *af, Error *e); // fclose + rename; on failure the temp is removed
void atomic_abort(AtomicFile *af);           // fclose + remove the temp
// A temporary path next to `path` for writers that open files themselves
// (HDF5, directories): registered for removal on SIGINT/SIGTERM until
// rename_into_place (or atomic_tmp_forget) is called; stale temporaries of
// dead processes beside `path` are removed first.
void atomic_tmp_path(char *out, size_t n, const char *path);
void atomic_tmp_forget(const char *tmp);
int rename_into_place(const char *tmp, const char *path, Error *e);
// Replaces directory `dir` by `tmp_dir` (same filesystem) with one atomic
// exchange where the filesystem has it; the old directory is then removed.
int rename_dir_into_place(const char *tmp_dir, const char *dir, Error *e);
int remove_tree(const char *path);
// mkdir -p: creates dir and its missing parents.
int make_dirs(const char *dir, Error *e);
// Creates the missing parent directories of path (every tool's --out may name new folders).
int make_parent_dirs(const char *path, Error *e);

// SIGINT/SIGTERM remove the registered temporaries, then end the process as
// the signal would have (the CLI installs this once; a verb that handles the
// signals itself, like train, saves its state instead).
void output_signals_install(void);

// An exclusive lock on the output `path` (a file or a directory, existing or
// not), held through "<path>.lock" until output_unlock or the process's end.
// Fails at once, naming the holder's PID, when another process holds it.
typedef struct {
    int fd;            // -1: not held
    char path[4200];   // the lock file
} OutputLock;
int output_lock(OutputLock *l, const char *path, Error *e);
void output_unlock(OutputLock *l);
// The same, held until the process ends (exit, or SIGINT/SIGTERM through
// output_signals_install), for a verb that writes `path` once.
int output_lock_hold(const char *path, Error *e);

#endif
