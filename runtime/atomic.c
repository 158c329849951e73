// atomic.c: see atomic.h.
#include "runtime/atomic.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

// ---------------------------------------------------------------------------
// Temporaries: registered while they exist, removed on SIGINT/SIGTERM

enum { TMP_SLOTS = 64 };
static char g_tmp[TMP_SLOTS][4200];
static volatile sig_atomic_t g_tmp_used[TMP_SLOTS];

static void tmp_register(const char *tmp) {
    for (int i = 0; i < TMP_SLOTS; i++)
        if (!g_tmp_used[i]) {
            snprintf(g_tmp[i], sizeof g_tmp[i], "%s", tmp);
            g_tmp_used[i] = 1;
            return;
        }
    // All slots busy (never in earnest's verbs): the temp is only left to the stale cleanup.
}

void atomic_tmp_forget(const char *tmp) {
    for (int i = 0; i < TMP_SLOTS; i++)
        if (g_tmp_used[i] && !strcmp(g_tmp[i], tmp)) g_tmp_used[i] = 0;
}

// Locks held until the process ends (output_lock_hold).
enum { HELD_LOCKS = 8 };
static OutputLock g_held[HELD_LOCKS];
static volatile sig_atomic_t g_n_held;

// Every lock file this process holds, for the signal handler.
enum { LOCK_SLOTS = 16 };
static char g_lock_path[LOCK_SLOTS][4200];
static volatile sig_atomic_t g_lock_used[LOCK_SLOTS];

static void on_fatal_signal(int sig) {
    for (int i = 0; i < TMP_SLOTS; i++)
        if (g_tmp_used[i]) unlink(g_tmp[i]); // async-signal-safe; a temporary directory is left to the stale cleanup
    for (int i = 0; i < LOCK_SLOTS; i++)
        if (g_lock_used[i]) unlink(g_lock_path[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

void output_signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0, "sigaction: %s", strerror(errno));
}

// Removes "<base>.tmp.<pid>" entries beside `path` whose process is gone.
static void remove_stale_tmps(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = path;
    if (slash) {
        base = path + (slash - dir) + 1;
        if (slash == dir) slash[1] = 0;
        else *slash = 0;
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    size_t nb = strlen(base);
    if (!nb) return;
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *de;
    while ((de = readdir(dp))) {
        const char *nm = de->d_name;
        if (strncmp(nm, base, nb) || strncmp(nm + nb, ".tmp.", 5)) continue;
        const char *digits = nm + nb + 5;
        char *end;
        long pid = strtol(digits, &end, 10);
        if (end == digits || *end || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; // alive (or not ours to judge)
        char stale[8400];
        if ((size_t)snprintf(stale, sizeof stale, "%s/%s", dir, nm) < sizeof stale) remove_tree(stale);
    }
    closedir(dp);
}

void atomic_tmp_path(char *out, size_t n, const char *path) {
    remove_stale_tmps(path);
    snprintf(out, n, "%s.tmp.%ld", path, (long)getpid());
    tmp_register(out);
}

// ---------------------------------------------------------------------------
// Atomic files and directories


int atomic_open(AtomicFile *af, const char *path, Error *e) {
    if (strlen(path) >= sizeof af->path) return err_set(e, "%s: path too long", path);
    snprintf(af->path, sizeof af->path, "%s", path);
    atomic_tmp_path(af->tmp, sizeof af->tmp, path);
    if (make_parent_dirs(path, e)) return -1;
    af->f = fopen(af->tmp, "wb");
    if (!af->f) return err_set(e, "%s: cannot create: %s", af->tmp, strerror(errno));
    return 0;
}

int rename_into_place(const char *tmp, const char *path, Error *e) {
    int rc = 0;
    if (rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        rc = err_set(e, "%s: cannot rename %s into place: %s", path, tmp, strerror(err));
    }
    atomic_tmp_forget(tmp);
    return rc;
}

int atomic_commit(AtomicFile *af, Error *e) {
    int bad = ferror(af->f);
    if (fclose(af->f) != 0 || bad) {
        int err = errno;
        af->f = NULL;
        remove(af->tmp);
        atomic_tmp_forget(af->tmp);
        return err_set(e, "%s: write failed: %s", af->path, strerror(err));
    }
    af->f = NULL;
    return rename_into_place(af->tmp, af->path, e);
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    remove(af->tmp);
    atomic_tmp_forget(af->tmp);
}

static int remove_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return 0;
    return nftw(path, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int make_dirs(const char *dir, Error *e) {
    char buf[4096];
    if (strlen(dir) >= sizeof buf) return err_set(e, "%s: path too long", dir);
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char saved = *p;
        *p = 0;
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return err_set(e, "%s: cannot create directory %s: %s", dir, buf, strerror(errno));
        *p = saved;
        if (saved == 0) break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return err_set(e, "%s: not a directory", dir);
    return 0;
}

int make_parent_dirs(const char *path, Error *e) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return err_set(e, "%s: path too long", path);
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf) return 0;
    *slash = 0;
    return make_dirs(buf, e);
}

int rename_dir_into_place(const char *tmp_dir, const char *dir, Error *e) {
    // One atomic exchange: at every moment `dir` names a complete directory.
    if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        remove_tree(tmp_dir); // now the old directory (a kill here leaves a stale temp, removed by the next writer)
        atomic_tmp_forget(tmp_dir);
        return 0;
    }
    if (errno == ENOENT) { // no `dir` yet
        if (rename(tmp_dir, dir) != 0)
            return err_set(e, "%s: cannot rename %s into place: %s", dir, tmp_dir, strerror(errno));
        atomic_tmp_forget(tmp_dir);
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS)
        return err_set(e, "%s: cannot exchange it with %s: %s", dir, tmp_dir, strerror(errno));
    // A filesystem without RENAME_EXCHANGE: move the old one aside, then the new one in.
    char old[4200];
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    remove_tree(old);
    if (rename(dir, old) != 0)
        return err_set(e, "%s: cannot move the existing directory aside: %s", dir, strerror(errno));
    if (rename(tmp_dir, dir) != 0) {
        int err = errno;
        rename(old, dir);
        return err_set(e, "%s: cannot rename %s into place: %s", dir, tmp_dir, strerror(err));
    }
    remove_tree(old);
    atomic_tmp_forget(tmp_dir);
    return 0;
}

// ---------------------------------------------------------------------------
// Output locks

int output_lock(OutputLock *l, const char *path, Error *e) {
    l->fd = -1;
    char p[4096];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p || !p[0]) return err_set(e, "%s: bad output path", path);
    for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--) p[n - 1] = 0; // "dir/" and "dir" are one output
    snprintf(l->path, sizeof l->path, "%s.lock", p);
    if (make_parent_dirs(l->path, e)) return -1;
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) return err_set(e, "%s: cannot create the lock %s: %s", p, l->path, strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int err = errno;
            long pid = 0;
            for (int tries = 0; err == EWOULDBLOCK && pid <= 0 && tries < 50; tries++) {
                char buf[32] = {0}; // the holder writes its PID right after taking the lock: wait for it briefly
                if (pread(fd, buf, sizeof buf - 1, 0) > 0) pid = strtol(buf, NULL, 10);
                if (pid <= 0) usleep(2000);
            }
            close(fd);
            if (err != EWOULDBLOCK) return err_set(e, "%s: cannot lock %s: %s", p, l->path, strerror(err));
            if (pid > 0) return err_set(e, "%s is in use by PID %ld (lock %s); nothing was changed", p, pid, l->path);
            return err_set(e, "%s is in use by another process (lock %s); nothing was changed", p, l->path);
        }
        // A holder that released the lock unlinks the file: if ours is no longer the one
        // at the path, a third process may lock the new one, so start again.
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(l->path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            char buf[32];
            int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
            if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
                int err = errno;
                close(fd);
                return err_set(e, "%s: cannot write the lock %s: %s", p, l->path, strerror(err));
            }
            l->fd = fd;
            for (int i = 0; i < LOCK_SLOTS; i++)
                if (!g_lock_used[i]) {
                    snprintf(g_lock_path[i], sizeof g_lock_path[i], "%s", l->path);
                    g_lock_used[i] = 1;
                    break;
                }
            return 0;
        }
        close(fd);
    }
    return err_set(e, "%s: the lock %s keeps changing; try again", p, l->path);
}

static void release_held_locks(void) {
    for (int i = 0; i < g_n_held; i++) output_unlock(&g_held[i]);
}

int output_lock_hold(const char *path, Error *e) {
    CHECK(g_n_held < HELD_LOCKS, "output_lock_hold: more than %d outputs", HELD_LOCKS);
    OutputLock l;
    if (output_lock(&l, path, e)) return -1;
    if (g_n_held == 0) CHECK(atexit(release_held_locks) == 0, "atexit failed");
    g_held[g_n_held] = l;
    g_n_held++;
    return 0;
}

void output_unlock(OutputLock *l) {
    if (l->fd < 0) return;
    for (int i = 0; i < LOCK_SLOTS; i++)
        if (g_lock_used[i] && !strcmp(g_lock_path[i], l->path)) g_lock_used[i] = 0;
    unlink(l->path); // while still holding it (see output_lock)
    close(l->fd);
    l->fd = -1;
}
