// cli.h: small helpers shared by the verbs: flag values with errors that name
// the flag, integer lists ("1024,4096"), and the token list of `forward`.
#ifndef EARNEST_CLI_H
#define EARNEST_CLI_H

#include "runtime/util.h"

// Returns argv[++*i] for flag argv[*i], or NULL with a message if it is missing.
const char *cli_value(int argc, char **argv, int *i);
// Parses an int in [lo, hi]; on failure prints "earnest VERB: --flag: ..." and returns -1.
int cli_int(const char *verb, const char *flag, const char *s, long lo, long hi, int *out);
int cli_float(const char *verb, const char *flag, const char *s, float *out);
// Parses "a,b,c" (or "a b c" for spaces = 1) into a new array; returns the count or -1.
int cli_int_list(const char *verb, const char *flag, const char *s, long lo, long hi, int **out, int spaces);
// Prints the message of e as "earnest VERB: msg" and returns 1.
int cli_fail(const char *verb, const Error *e);

#endif
