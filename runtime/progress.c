// progress.c: see progress.h.
#include "runtime/progress.h"

#include <stdio.h>
#include <unistd.h>

#include "runtime/util.h"

void progress_init(Progress *p, int enabled) {
    p->enabled = enabled;
    p->is_tty = isatty(2);
    p->t0 = time_now_s();
    p->t_last = -1e30;
    p->last_tenth = -1;
}

double progress_elapsed(const Progress *p) { return time_now_s() - p->t0; }

void progress_show(Progress *p, const char *label, double frac, const char *text, int final) {
    if (!p->enabled) return;
    double now = time_now_s();
    frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
    int tenth = (int)(frac * 10.0 + 1e-9);
    if (!final) {
        if (p->is_tty && now - p->t_last < 0.25) return;
        if (!p->is_tty && tenth == p->last_tenth && now - p->t_last < 15.0) return;
    } else if (!p->is_tty && tenth == p->last_tenth && now - p->t_last < 1.0) {
        return; // a log already has this line
    }
    p->t_last = now;
    p->last_tenth = tenth;
    char bar[21];
    int fill = (int)(frac * 20.0 + 1e-9);
    for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : '.';
    bar[20] = 0;
    fprintf(stderr, "%s%s [%s] %3.0f%% %s%s", p->is_tty ? "\r" : "", label, bar, 100.0 * frac, text,
            p->is_tty ? (final ? "\n" : "   ") : "\n");
    fflush(stderr);
}

void progress_format_duration(char *out, int n, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(out, (size_t)n, "?"); return; } // also NaN

    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, (size_t)n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60) snprintf(out, (size_t)n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, (size_t)n, "%lds", t);
}
