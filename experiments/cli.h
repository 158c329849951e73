// cli.h: the one flag parser of the `earnest` verbs. Each verb declares its
// flags in a table (name, type, where the value goes, range, help); cli_parse
// fills the variables, reports every error the same way
// ("earnest VERB: --flag: ..."), and prints the usage text it builds from the
// same table. The value a variable holds before cli_parse is the flag's
// default (shown in the usage).
//
//   static const char *out = NULL; int beam = 20;
//   CliFlag flags[] = {
//       {"--out", CLI_STRING, &out, .meta = "E.json", .required = 1, .help = "metrics JSON"},
//       {"--beam", CLI_INT, &beam, .lo = 1, .hi = 1024, .help = "beam width"},
//   };
//   CliSpec cli = {"eval", "--out E.json [--beam N]", "Ranks ...", flags, CLI_COUNT(flags)};
//   int rc = cli_parse(&cli, argc, argv);
//   if (rc >= 0) return rc;   // --help (0) or a usage error (2)
#ifndef EARNEST_CLI_H
#define EARNEST_CLI_H

#include <stdio.h>

#include "runtime/util.h"

#define CLI_MAX_FLAGS 64

typedef enum {
    CLI_STRING,    // const char **: the value as given; with .choices, one of them
    CLI_INT,       // int *: an integer in [lo, hi]
    CLI_FLOAT,     // float *: a finite number in [lo, hi]
    CLI_DOUBLE,    // double *: a finite number in [lo, hi]
    CLI_FLAG,      // int *: set to 1; takes no value
    CLI_INT_LIST,  // CliIntList *: "a,b,c" (or .sep), each an integer in [lo, hi]
    CLI_STRINGS,   // CliStrings *: a repeatable flag; every value, in order (at most hi of them, 0: 256)
} CliType;

typedef struct {
    int *v;        // [n]; a default may point at the caller's array, a parsed list is
    int n;         // allocated and cli_free releases it
} CliIntList;

typedef struct {
    const char **v;  // [n], owned array (the strings are argv's): cli_free releases it
    int n;
} CliStrings;

typedef struct {
    const char *name;     // "--beam"
    CliType type;
    void *dst;            // see CliType
    double lo, hi;        // range of INT, FLOAT, DOUBLE, INT_LIST (lo == hi == 0: any finite value)
    const char *meta;     // the value's name in the usage ("N", "DIR"); NULL: from the type
    const char *help;     // one line (more lines with "\n")
    const char *choices;  // STRING: "finetune|earn" restricts the value
    int required;
    char sep;             // INT_LIST separator (0: ','; ' ' also skips repeated blanks)
} CliFlag;

typedef struct {
    const char *verb;       // "eval", "data stats"
    const char *synopsis;   // after "usage: earnest VERB "
    const char *about;      // paragraph printed under the synopsis (may be NULL)
    const CliFlag *flags;
    int n_flags;
    // Positional arguments (everything not starting with "--"): at most
    // max_args of them land in args[]; fewer than min_args is an error.
    const char **args;
    int min_args, max_args;
    int *n_args;
    const char *args_meta;  // their name in messages ("A.h5")
    unsigned char given[CLI_MAX_FLAGS]; // set by cli_parse: flag i appeared
} CliSpec;

#define CLI_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

// Parses argv[1..argc) (argv[0] is the verb). Returns -1 when the verb should
// go on; otherwise the exit status to return: 0 after --help/-h (usage on
// stdout), 2 after a usage error (message on stderr). Flags may come in any
// order; a flag given again replaces its value (a CLI_STRINGS flag collects).
// When it returns an exit status it has released its lists already.
int cli_parse(CliSpec *spec, int argc, char **argv);
void cli_usage(FILE *f, const CliSpec *spec);
// Releases the lists (CLI_INT_LIST, CLI_STRINGS) cli_parse allocated (not the defaults).
void cli_free(const CliSpec *spec);
// Whether a flag appeared on the command line (after cli_parse).
int cli_given(const CliSpec *spec, const char *name);

// Prints "earnest VERB: msg" and returns 1 (the exit status of a failed run).
int cli_fail(const char *verb, const Error *e);

#endif
