/* Option and argument parsing shared by every mailagent command, its error
 * and usage lines, and opening the configured database. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

const char cli_global_help[] =
    "Global options (before or after the command):\n"
    "  --db PATH        SQLite database (default: $MAILAGENT_DB)\n"
    "  --redis URL      Redis URL, redis://[[user]:password@]host[:port][/db] or\n"
    "                   unix:///path (default: $MAILAGENT_REDIS_URL, else\n"
    "                   $REDIS_URL/$REDIS_DB; none: events are not published\n"
    "                   and `events tail` cannot run)\n"
    "  --channel NAME   pub/sub channel (default: $MAILAGENT_CHANNEL or\n"
    "                   " CLI_DEFAULT_CHANNEL ")\n"
    "  --stream KEY     Redis Stream of stream mode (default: $MAILAGENT_STREAM;\n"
    "                   none: pub/sub only)\n"
    "  -h, --help       show help (also after any command)\n";

/* Writes the message as one line: a library's detail text may carry a
 * newline, and scripts read exactly one line per failure. */
static void vline(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(f, "%s%s\n", prefix, buf);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vline(stderr, "mailagent: ", fmt, ap);
    va_end(ap);
}

void cli_print_usage(const cli_command *cmd, FILE *f)
{
    fprintf(f, CLI_USAGE_PREFIX "%s %s %s\n", cmd->group, cmd->name, cmd->synopsis);
}

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    char prefix[96];
    va_list ap;
    snprintf(prefix, sizeof prefix, "mailagent %s %s: ", cmd->group, cmd->name);
    va_start(ap, fmt);
    vline(stderr, prefix, fmt, ap);
    va_end(ap);
    cli_print_usage(cmd, stderr);
    return CLI_USAGE;
}

static void print_help(const cli_command *cmd)
{
    cli_print_usage(cmd, stdout);
    printf("\n%s\n\n%s\n%s", cmd->summary, cmd->help, cli_global_help);
}

/* The option as the user typed it, for the error line: getopt leaves the
 * offending element at argv[optind - 1], except inside a cluster of short
 * options ("-xy"), where only optopt is reliable. */
static void bad_option(const char *what, int argc, char **argv, char *out, size_t size)
{
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : NULL;
    if (arg && strncmp(arg, "--", 2) == 0) {
        size_t n = strcspn(arg, "=");
        snprintf(out, size, "%s '%.*s'", what, (int)n, arg);
    } else if (optopt > 0 && optopt < 128 && isprint(optopt)) {
        snprintf(out, size, "%s '-%c'", what, optopt);
    } else {
        snprintf(out, size, "%s '%s'", what, arg ? arg : "?");
    }
}

int cli_getopt(const cli_command *cmd, cli_config *cfg, int argc, char **argv,
               const char *optstring, const struct option *longopts)
{
    /* A leading ':' makes getopt tell a missing value (':') from an unknown
     * option ('?'); opterr = 0 keeps its own messages out, so each failure
     * is exactly our error line and the usage line. */
    char spec[64];
    char what[160];
    snprintf(spec, sizeof spec, ":h%s", optstring);
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, spec, longopts, NULL);
        switch (c) {
        case OPT_DB:
            cfg->db_path = optarg;
            break;
        case OPT_REDIS:
            cfg->redis_url = optarg;
            break;
        case OPT_CHANNEL:
            if (!*optarg) {
                cli_usage_error(cmd, "the channel must not be empty");
                return '?';
            }
            cfg->channel = optarg;
            break;
        case OPT_STREAM:
            if (!*optarg) {
                cli_usage_error(cmd, "the stream key must not be empty");
                return '?';
            }
            cfg->stream_key = optarg;
            break;
        case 'h':
            print_help(cmd);
            return 'h';
        case ':':
            bad_option("missing value for option", argc, argv, what, sizeof what);
            cli_usage_error(cmd, "%s", what);
            return '?';
        case '?':
            bad_option("unknown option", argc, argv, what, sizeof what);
            cli_usage_error(cmd, "%s", what);
            return '?';
        default:
            return c;
        }
    }
}

bool cli_positionals(const cli_command *cmd, int argc, char **argv, int min, int max)
{
    int n = argc - optind;
    if (n < min) {
        cli_usage_error(cmd, "missing argument");
        return false;
    }
    if (n > max) {
        cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + max]);
        return false;
    }
    return true;
}

bool cli_parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    /* strtoll alone would take " 5", "+5", "-5" and "5abc"; ids and limits
     * are plain digits. */
    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < min || v > max)
        return false;
    *out = (int64_t)v;
    return true;
}

bool cli_parse_seconds(const char *s, double *out)
{
    size_t digits = 0, dots = 0;
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        if (isdigit((unsigned char)*p))
            digits++;
        else if (*p == '.')
            dots++;
        else
            return false;
    }
    if (digits == 0 || dots > 1 || digits > 9)
        return false;
    double v = strtod(s, NULL);
    if (!(v > 0))
        return false;
    *out = v;
    return true;
}

int cli_open_db(const cli_config *cfg, bool read_only, mae_publisher *pub, mae_db **out)
{
    struct stat st;
    char err[256] = "";
    mae_db_config dc;
    mae_db *db = NULL;

    if (!cfg->db_path || !*cfg->db_path) {
        cli_error("no database given: set MAILAGENT_DB or pass --db PATH");
        return CLI_USAGE;
    }
    /* Checked here, not left to SQLite, so that neither a read nor a write
     * ever creates the file, and the message names the real reason. */
    if (stat(cfg->db_path, &st) != 0) {
        cli_error("cannot open database %s: %s", cfg->db_path, strerror(errno));
        return CLI_FAIL;
    }
    if (S_ISDIR(st.st_mode)) {
        cli_error("cannot open database %s: is a directory", cfg->db_path);
        return CLI_FAIL;
    }
    mae_db_config_init(&dc);
    dc.path = cfg->db_path;
    dc.read_only = read_only;
    dc.publisher = pub;
    dc.error_buf = err;
    dc.error_buf_size = sizeof err;
    int rc = mae_db_open(&dc, &db);
    if (rc != MAE_OK) {
        cli_error("cannot open database %s: %s", cfg->db_path, err[0] ? err : mae_strerror(rc));
        return CLI_FAIL;
    }
    *out = db;
    return CLI_OK;
}

int cli_db_failure(mae_db *db, const char *what, int rc)
{
    const char *detail = mae_db_errmsg(db);
    if (detail && *detail)
        cli_error("%s: %s (%s)", what, detail, mae_strerror(rc));
    else
        cli_error("%s: %s", what, mae_strerror(rc));
    return CLI_FAIL;
}
