/* Internal interface of the mailagent command: its configuration, the
 * table of commands each file implements, and the helpers they share. */
#ifndef MAILAGENT_CLI_H
#define MAILAGENT_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include <mailagent/events.h>

/* Exit codes, the contract scripts rely on. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

#define CLI_DEFAULT_CHANNEL MAE_DEFAULT_CHANNEL

/* Where the command finds its database and Redis: the environment, then
 * --db/--redis/--channel wherever they appear. Strings are borrowed from
 * the environment or argv, which outlive every command. */
typedef struct cli_config {
    const char *db_path;    /* NULL when not configured */
    const char *redis_url;  /* NULL when not configured: publishing disabled */
    const char *channel;    /* never NULL */
    const char *stream_key; /* Redis Stream of the events; NULL: pub/sub only */
    const char *relay_url;  /* a relay running as the hub: where events go when
                               redis_url is NULL; NULL when not configured */
    const char *relay_token; /* its X-MailAgent-Local-Token; NULL: none */
    const char *relay_error; /* why MAILAGENT_RELAY_URL / _LOCAL_API_TOKEN cannot
                                be used (said by the commands that publish
                                to the relay, not by the others); NULL: fine */
} cli_config;

typedef struct cli_command cli_command;
typedef int (*cli_run_fn)(const cli_command *cmd, cli_config *cfg, int argc, char **argv);

/* One leaf command, e.g. "email get". run() gets argv with the leaf's own
 * name as argv[0] and returns the process exit code. */
struct cli_command {
    const char *group;      /* "email" */
    const char *name;       /* "get" */
    const char *synopsis;   /* "[--json] ID", printed after "mailagent email get" */
    const char *summary;    /* one line for the group's help */
    const char *help;       /* the options and details, for --help */
    cli_run_fn run;
};

/* The leaf commands (defined in email.c, admin.c, llm.c, tail.c, serve.c). */
extern const cli_command cli_email_list, cli_email_get, cli_email_flag;
extern const cli_command cli_admin_queue_depth, cli_admin_stats, cli_admin_retry_dead_letter;
extern const cli_command cli_llm_stats;
extern const cli_command cli_events_tail, cli_events_serve;

/* ---- options (args.c) -------------------------------------------------- */

/* Ids of the options every command accepts; a command's own long options
 * use small characters, so these cannot clash. */
enum { OPT_DB = 0x100, OPT_REDIS, OPT_CHANNEL, OPT_STREAM };

/* The start of every usage line, and the help text of the global options
 * (one copy, shown by every --help). */
#define CLI_USAGE_PREFIX "usage: mailagent [--db PATH] [--redis URL] [--channel NAME] "
extern const char cli_global_help[];

/* The global options, to end every command's struct option array with
 * (before the terminating zero entry). --help maps to 'h'. */
#define CLI_GLOBAL_LONGOPTS                                     \
    {"db", required_argument, NULL, OPT_DB},                    \
    {"redis", required_argument, NULL, OPT_REDIS},              \
    {"channel", required_argument, NULL, OPT_CHANNEL},          \
    {"stream", required_argument, NULL, OPT_STREAM},            \
    {"help", no_argument, NULL, 'h'}

/* Like getopt_long over the leaf command's argv (permuting, so options may
 * follow the arguments), with the global options handled here. Returns the
 * command's next own option, -1 at the end (positional arguments are then
 * argv[optind..argc)), 'h' after printing the help to stdout, or '?' after
 * printing one error line and the usage line to stderr. optstring is the
 * command's short options without a leading ':' ("h" is added). Start each
 * parse with optind = 0. */
int cli_getopt(const cli_command *cmd, cli_config *cfg, int argc, char **argv,
               const char *optstring, const struct option *longopts);

/* Checks that there are between min and max positional arguments left;
 * otherwise prints the error and the usage line and returns false. */
bool cli_positionals(const cli_command *cmd, int argc, char **argv, int min, int max);

/* Parses a decimal integer in [min, max]: digits only, no sign, no
 * spaces, no overflow. Returns false (nothing printed) otherwise. */
bool cli_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);

/* Parses a number of seconds: digits with an optional fraction, > 0. */
bool cli_parse_seconds(const char *s, double *out);

/* Prints "mailagent: <message>" as one line to stderr. */
void cli_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Prints "mailagent <group> <name>: <message>" and the usage line to
 * stderr; returns CLI_USAGE. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prints the command's usage line ("usage: mailagent ...") to f. */
void cli_print_usage(const cli_command *cmd, FILE *f);

/* Opens the configured database: read-only for the reads (a missing file is
 * reported, never created), read-write for the writes (which also refuse to
 * create a missing file: a mistyped path must not leave an empty database
 * behind). pub is borrowed, may be NULL. Prints one line and returns
 * CLI_FAIL or CLI_USAGE on failure, CLI_OK and *out on success. */
int cli_open_db(const cli_config *cfg, bool read_only, mae_publisher *pub, mae_db **out);

/* Prints one line for a failed store call and returns CLI_FAIL. */
int cli_db_failure(mae_db *db, const char *what, int rc);

/* ---- output (output.c) ------------------------------------------------- */

/* An aligned text table: columns separated by two spaces, headers in
 * capitals, numbers right-aligned. Cells are copied. */
typedef struct cli_table cli_table;

/* align: one character per column, 'l' or 'r'. NULL on out of memory. */
cli_table *cli_table_new(const char *align, const char *const *headers);
/* Adds a row of as many cells as columns (NULL cell prints "-"). */
bool cli_table_row(cli_table *t, const char *const *cells);
void cli_table_print(const cli_table *t);
void cli_table_free(cli_table *t);

/* Formats epoch seconds as local "YYYY-MM-DD HH:MM:SS" into buf; 0 = "-". */
const char *cli_fmt_time(double epoch, char *buf, size_t size);
/* Formats an integer into buf. */
const char *cli_fmt_int(int64_t v, char *buf, size_t size);
/* A copy of s cut to at most max code points (with "..." when cut), with
 * control characters shown as spaces so a table stays aligned. The result
 * is owned by buf. */
const char *cli_fmt_cell(const char *s, size_t max, char *buf, size_t size);

/* JSON values built with json-c. Strings are repaired to valid UTF-8 (each
 * bad byte becomes U+FFFD) and non-ASCII is kept raw. NULL gives null. */
json_object *cli_json_string(const char *s);
/* Epoch seconds with microsecond precision; 0 (a NULL column) gives null. */
json_object *cli_json_time(double epoch);
/* A number with `decimals` decimals, printed as such. */
json_object *cli_json_fixed(double v, int decimals);
/* A mae_counts as an object {key: count}. */
json_object *cli_json_counts(const mae_counts *counts);
/* A JSON text (e.g. payload_json) parsed back into a value; the raw text as
 * a string when it does not parse. */
json_object *cli_json_embed(const char *text);
/* Prints obj (pretty, '/' not escaped, one trailing newline) to stdout and
 * releases it. Returns CLI_OK, or CLI_FAIL when stdout cannot be written. */
int cli_json_print(json_object *obj);

/* Prints a two-column table HEAD / COUNT of counts, with a total row. */
void cli_counts_table(const char *head, const mae_counts *counts);
/* The sum of the counts. */
int64_t cli_counts_total(const mae_counts *counts);
/* The count of one key, 0 when absent. */
int64_t cli_counts_get(const mae_counts *counts, const char *key);

/* Finishes stdout: CLI_OK, or CLI_FAIL with one line when it could not be
 * written (a full disk, a closed pipe). */
int cli_finish_stdout(void);

/* ---- LLM summary (llm.c), shared with `admin stats` -------------------- */

typedef struct cli_llm_summary {
    mae_counts *by_status;
    mae_llm_totals totals;
} cli_llm_summary;

/* Reads the summary; prints one line and returns CLI_FAIL on failure. */
int cli_llm_summary_read(mae_db *db, cli_llm_summary *out);
void cli_llm_summary_free(cli_llm_summary *s);
json_object *cli_llm_summary_json(const cli_llm_summary *s);
void cli_llm_summary_print(const cli_llm_summary *s);

#endif
