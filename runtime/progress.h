// progress.h: one progress display for long runs (train, eval, dump-attn), on stderr.
//
// On a terminal the line is redrawn in place at most 4 times a second; in a
// log (stderr not a terminal) a full line is written every 10% of the work or
// every 15 seconds, whichever comes first, so logs stay short and readable.
#ifndef EARNEST_PROGRESS_H
#define EARNEST_PROGRESS_H

typedef struct {
    int enabled;
    int is_tty;
    double t0;      // when the work started
    double t_last;  // when the line was last drawn
    int last_tenth; // 10%-step of the last line written to a log
} Progress;

void progress_init(Progress *p, int enabled);
double progress_elapsed(const Progress *p); // seconds since progress_init
// Draws "<label> [####......] 42% <text>". frac in [0, 1]; final forces the
// line out (and ends it on a terminal).
void progress_show(Progress *p, const char *label, double frac, const char *text, int final);
// "1h02m", "3m07s", "12s"; "?" for a negative, NaN or absurd duration.
void progress_format_duration(char *out, int n, double seconds);

#endif
