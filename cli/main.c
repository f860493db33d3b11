/* The mailagent command's entry point: configuration from the environment
 * and the global options, and dispatch to the command groups. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/env.h"

typedef struct group {
    const char *name;
    const char *summary;
    const cli_command *const *commands;   /* NULL-terminated */
} group;

static const cli_command *const email_commands[] = {&cli_email_list, &cli_email_get,
                                                    &cli_email_flag, NULL};
static const cli_command *const admin_commands[] = {
    &cli_admin_queue_depth, &cli_admin_stats, &cli_admin_retry_dead_letter, NULL};
static const cli_command *const llm_commands[] = {&cli_llm_stats, NULL};
static const cli_command *const events_commands[] = {&cli_events_tail, &cli_events_serve,
                                                     NULL};

static const group groups[] = {
    {"email", "mails: their sync state, outbox intents and LLM row; flag them", email_commands},
    {"admin", "the outbox queue, overall counts, dead letters", admin_commands},
    {"llm", "the LLM processing store", llm_commands},
    {"events", "the live event stream on Redis", events_commands},
};
#define NGROUPS (sizeof groups / sizeof groups[0])

static const char top_usage[] = CLI_USAGE_PREFIX "COMMAND [ARGS...]\n";

/* Follows cli_global_help in the top-level help. */
static const char top_footer[] =
    "  -V, --version    show the version\n"
    "\n"
    "Every read takes --json for scripts.\n"
    "Exit status: 0 ok, 1 not found or failed, 2 usage error.\n";

static void print_commands(const group *g, FILE *f)
{
    for (const cli_command *const *c = g->commands; *c; c++)
        fprintf(f, "  %s %s %s\n      %s\n", (*c)->group, (*c)->name, (*c)->synopsis,
                (*c)->summary);
}

static void top_help(void)
{
    fputs(top_usage, stdout);
    fputs("\nRead and change the mail-sync state kept by mailagent-events, and follow\n"
          "its events as they are published.\n\nCommands:\n",
          stdout);
    for (size_t i = 0; i < NGROUPS; i++)
        print_commands(&groups[i], stdout);
    fputs("\n", stdout);
    fputs(cli_global_help, stdout);
    fputs(top_footer, stdout);
}

static void group_usage(const group *g, FILE *f)
{
    fprintf(f, CLI_USAGE_PREFIX "%s COMMAND [ARGS...]\n", g->name);
}

static void group_help(const group *g)
{
    group_usage(g, stdout);
    printf("\n%s.\n\nCommands:\n", g->summary);
    print_commands(g, stdout);
    printf("\nRun `mailagent %s COMMAND --help` for a command's options.\n", g->name);
}

/* Prints an error about the top level or a group, and its usage line. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int usage_error(const group *g, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "mailagent%s%s: %s\n", g ? " " : "", g ? g->name : "", msg);
    if (g)
        group_usage(g, stderr);
    else
        fputs(top_usage, stderr);
    return CLI_USAGE;
}

/* Parses the options in front of a command or subcommand name ("+" stops
 * at the first non-option). Returns -1 to go on, or an exit code. */
static int parse_prefix(const group *g, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"version", no_argument, NULL, 'V'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    optind = 0;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, g ? "+:h" : "+:hV", g ? opts + 1 : opts, NULL);
        const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        char shortopt[3] = {'-', (char)optopt, 0};
        switch (c) {
        case -1:
            return -1;
        case OPT_DB:
            cfg->db_path = optarg;
            break;
        case OPT_REDIS:
            cfg->redis_url = optarg;
            break;
        case OPT_CHANNEL:
            if (!*optarg)
                return usage_error(g, "the channel must not be empty");
            cfg->channel = optarg;
            break;
        case OPT_STREAM:
            if (!*optarg)
                return usage_error(g, "the stream key must not be empty");
            cfg->stream_key = optarg;
            break;
        case 'h':
            if (g)
                group_help(g);
            else
                top_help();
            return CLI_OK;
        case 'V':
            printf("mailagent (mailagent-events) %s\n", MAE_VERSION_STRING);
            return CLI_OK;
        case ':':
            return usage_error(g, "missing value for option '%s'", arg);
        default:
            if (strncmp(arg, "--", 2) != 0 && optopt > 0 && optopt < 128)
                arg = shortopt;
            return usage_error(g, "unknown option '%s'", arg);
        }
    }
}

/* The environment as docs/operations.md#environment describes it, read by
 * core/env.c like every program of the project. Returns CLI_OK, or
 * CLI_USAGE after saying which variable is wrong. */
static int config_from_env(cli_config *cfg)
{
    /* A blank variable counts as unset: `MAILAGENT_REDIS_URL= REDIS_URL= mailagent`
     * is the usual way to switch publishing off for one command. */
    static char *redis_url; /* reachable for the life of the process */
    char err[320];
    const char *v;
    cfg->db_path = mae__env_get(NULL, "MAILAGENT_DB");
    cfg->channel = (v = mae__env_get(NULL, "MAILAGENT_CHANNEL")) ? v : CLI_DEFAULT_CHANNEL;
    cfg->stream_key = mae__env_get(NULL, "MAILAGENT_STREAM");
    int rc = mae__env_redis_url(NULL, &redis_url, NULL, err, sizeof err);
    if (rc == MAE_ENOMEM) {
        fprintf(stderr, "mailagent: out of memory\n");
        return CLI_FAIL;
    }
    if (rc != MAE_OK) {
        /* MailAgent's own configuration refuses a bad REDIS_DB at start too. */
        fprintf(stderr, "mailagent: %s\n", err);
        return CLI_USAGE;
    }
    cfg->redis_url = redis_url;
    /* The relay's URL and token matter only to the commands that publish
     * with no Redis URL: a token no header could carry is their usage
     * error, not every command's (the relay checks its own). */
    static char *relay_url; /* likewise */
    static char relay_err[320];
    rc = mae__env_relay(NULL, 0, &relay_url, &cfg->relay_token, relay_err, sizeof relay_err);
    if (rc == MAE_ENOMEM) {
        fprintf(stderr, "mailagent: out of memory\n");
        return CLI_FAIL;
    }
    cfg->relay_error = rc == MAE_OK ? NULL : relay_err;
    cfg->relay_url = relay_url;
    return CLI_OK;
}

int main(int argc, char **argv)
{
    cli_config cfg = {0};
    const group *g = NULL;
    int rc;

    if ((rc = config_from_env(&cfg)) != CLI_OK)
        return rc;
    if ((rc = parse_prefix(NULL, &cfg, argc, argv)) >= 0)
        return rc;
    if (optind >= argc)
        return usage_error(NULL, "missing command");
    if (strcmp(argv[optind], "help") == 0) {
        top_help();
        return CLI_OK;
    }
    for (size_t i = 0; i < NGROUPS; i++)
        if (strcmp(argv[optind], groups[i].name) == 0)
            g = &groups[i];
    if (!g)
        return usage_error(NULL, "unknown command '%s'", argv[optind]);

    /* From here argv[0] is the group's name, then the subcommand's. */
    argc -= optind;
    argv += optind;
    if ((rc = parse_prefix(g, &cfg, argc, argv)) >= 0)
        return rc;
    if (optind >= argc)
        return usage_error(g, "missing command");
    const char *name = argv[optind];
    for (const cli_command *const *c = g->commands; *c; c++) {
        if (strcmp((*c)->name, name) == 0) {
            argc -= optind;
            argv += optind;
            optind = 0;
            return (*c)->run(*c, &cfg, argc, argv);
        }
    }
    return usage_error(g, "unknown command '%s'", name);
}
