/* The `mailagent admin` commands: the outbox queue depth, overall counts of
 * the three stores, and sending a dead-lettered intent back to pending. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct option json_opts[] = {
    {"json", no_argument, NULL, 'j'},
    CLI_GLOBAL_LONGOPTS,
    {NULL, 0, NULL, 0},
};

/* Parses a command that takes only --json and `npos` positionals. Returns
 * -1 to go on, or the exit code. */
static int parse_json_only(const cli_command *cmd, cli_config *cfg, int argc, char **argv,
                           int npos, bool *json)
{
    int c;
    while ((c = cli_getopt(cmd, cfg, argc, argv, "", json_opts)) != -1) {
        if (c == 'h')
            return CLI_OK;
        if (c != 'j')
            return CLI_USAGE;
        *json = true;
    }
    return cli_positionals(cmd, argc, argv, npos, npos) ? -1 : CLI_USAGE;
}

/* ---- admin queue-depth ----------------------------------------------------- */

static json_object *depth_by_status_json(const mae_outbox_depth *d)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "pending", json_object_new_int64(d->pending));
    json_object_object_add(o, "processing", json_object_new_int64(d->processing));
    json_object_object_add(o, "failed", json_object_new_int64(d->failed));
    json_object_object_add(o, "dead_letter", json_object_new_int64(d->dead_letter));
    json_object_object_add(o, "done", json_object_new_int64(d->done));
    return o;
}

static json_object *depth_json(const mae_outbox_depth *d)
{
    json_object *o = json_object_new_object();
    json_object *targets = json_object_new_object();
    json_object *ages = json_object_new_object();
    json_object *mailapp = json_object_new_object();
    json_object *notion = json_object_new_object();

    json_object_object_add(mailapp, "pending", json_object_new_int64(d->mailapp.pending));
    json_object_object_add(mailapp, "processing", json_object_new_int64(d->mailapp.processing));
    json_object_object_add(mailapp, "failed", json_object_new_int64(d->mailapp.failed));
    json_object_object_add(notion, "pending", json_object_new_int64(d->notion.pending));
    json_object_object_add(notion, "processing", json_object_new_int64(d->notion.processing));
    json_object_object_add(notion, "failed", json_object_new_int64(d->notion.failed));
    json_object_object_add(targets, "mailapp", mailapp);
    json_object_object_add(targets, "notion", notion);
    json_object_object_add(ages, "under_1m", json_object_new_int64(d->pending_under_1m));
    json_object_object_add(ages, "under_5m", json_object_new_int64(d->pending_under_5m));
    json_object_object_add(ages, "under_30m", json_object_new_int64(d->pending_under_30m));
    json_object_object_add(ages, "over_30m", json_object_new_int64(d->pending_over_30m));

    json_object_object_add(o, "by_status", depth_by_status_json(d));
    json_object_object_add(o, "by_target", targets);
    json_object_object_add(o, "pending_age", ages);
    json_object_object_add(o, "oldest_pending_age_s", cli_json_fixed(d->oldest_pending_age_s, 3));
    return o;
}

static void table2(const char *head, const char *const *keys, const int64_t *values, size_t n)
{
    const char *const headers[] = {head, "COUNT"};
    char buf[32];
    cli_table *t = cli_table_new("lr", headers);
    for (size_t i = 0; t && i < n; i++) {
        const char *cells[] = {keys[i], cli_fmt_int(values[i], buf, sizeof buf)};
        cli_table_row(t, cells);
    }
    cli_table_print(t);
    cli_table_free(t);
}

static void depth_by_status_print(const mae_outbox_depth *d)
{
    static const char *const keys[] = {"pending", "processing", "failed", "dead_letter", "done"};
    const int64_t values[] = {d->pending, d->processing, d->failed, d->dead_letter, d->done};
    table2("OUTBOX STATUS", keys, values, 5);
}

static void depth_print(const mae_outbox_depth *d)
{
    static const char *const heads[] = {"TARGET", "PENDING", "PROCESSING", "FAILED"};
    static const char *const age_keys[] = {"under 1 min", "1 to 5 min", "5 to 30 min",
                                           "over 30 min"};
    const int64_t ages[] = {d->pending_under_1m, d->pending_under_5m, d->pending_under_30m,
                            d->pending_over_30m};
    char a[32], b[32], c[32];

    depth_by_status_print(d);
    fputc('\n', stdout);
    cli_table *t = cli_table_new("lrrr", heads);
    const char *mailapp[] = {"mailapp", cli_fmt_int(d->mailapp.pending, a, sizeof a),
                             cli_fmt_int(d->mailapp.processing, b, sizeof b),
                             cli_fmt_int(d->mailapp.failed, c, sizeof c)};
    cli_table_row(t, mailapp);
    const char *notion[] = {"notion", cli_fmt_int(d->notion.pending, a, sizeof a),
                            cli_fmt_int(d->notion.processing, b, sizeof b),
                            cli_fmt_int(d->notion.failed, c, sizeof c)};
    cli_table_row(t, notion);
    cli_table_print(t);
    cli_table_free(t);
    fputc('\n', stdout);
    table2("PENDING AGE", age_keys, ages, 4);
    if (d->pending > 0)
        printf("\noldest pending intent: %.0f s\n", d->oldest_pending_age_s);
}

static int run_queue_depth(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    bool json = false;
    mae_db *db = NULL;
    mae_outbox_depth d;
    int rc = parse_json_only(cmd, cfg, argc, argv, 0, &json);
    if (rc >= 0)
        return rc;
    if ((rc = cli_open_db(cfg, true, NULL, &db)) != CLI_OK)
        return rc;
    rc = mae_outbox_queue_depth(db, &d);
    if (rc != MAE_OK) {
        rc = cli_db_failure(db, "cannot read the outbox", rc);
        mae_db_close(db);
        return rc;
    }
    mae_db_close(db);
    if (json)
        return cli_json_print(depth_json(&d));
    depth_print(&d);
    return cli_finish_stdout();
}

const cli_command cli_admin_queue_depth = {
    "admin", "queue-depth", "[--json]",
    "Show the outbox: intents by status, by target, and pending ones by age.",
    "Options:\n"
    "  --json           {\"by_status\", \"by_target\", \"pending_age\",\n"
    "                   \"oldest_pending_age_s\"} as JSON\n",
    run_queue_depth,
};

/* ---- admin stats ----------------------------------------------------------- */

static int run_stats(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    bool json = false;
    mae_db *db = NULL;
    mae_counts *mails = NULL;
    mae_outbox_depth depth;
    cli_llm_summary llm = {0};
    int rc = parse_json_only(cmd, cfg, argc, argv, 0, &json);
    if (rc >= 0)
        return rc;
    if ((rc = cli_open_db(cfg, true, NULL, &db)) != CLI_OK)
        return rc;
    if ((rc = mae_sync_store_count_by_status(db, &mails)) != MAE_OK) {
        rc = cli_db_failure(db, "cannot count mails", rc);
        goto out;
    }
    if ((rc = mae_outbox_queue_depth(db, &depth)) != MAE_OK) {
        rc = cli_db_failure(db, "cannot read the outbox", rc);
        goto out;
    }
    if ((rc = cli_llm_summary_read(db, &llm)) != CLI_OK)
        goto out;

    int64_t synced = cli_counts_get(mails, "synced");
    if (json) {
        json_object *o = json_object_new_object();
        json_object *emails = json_object_new_object();
        json_object *outbox = json_object_new_object();
        json_object_object_add(emails, "total", json_object_new_int64(cli_counts_total(mails)));
        json_object_object_add(emails, "by_status", cli_json_counts(mails));
        json_object_object_add(outbox, "total",
                               json_object_new_int64(depth.pending + depth.processing +
                                                     depth.done + depth.failed +
                                                     depth.dead_letter));
        json_object_object_add(outbox, "by_status", depth_by_status_json(&depth));
        json_object_object_add(o, "emails_synced", json_object_new_int64(synced));
        json_object_object_add(o, "emails", emails);
        json_object_object_add(o, "outbox", outbox);
        json_object_object_add(o, "llm", cli_llm_summary_json(&llm));
        rc = cli_json_print(o);
    } else {
        printf("emails_synced  %lld of %lld mails\n\n", (long long)synced,
               (long long)cli_counts_total(mails));
        cli_counts_table("MAIL STATUS", mails);
        fputc('\n', stdout);
        depth_by_status_print(&depth);
        fputc('\n', stdout);
        cli_llm_summary_print(&llm);
        rc = cli_finish_stdout();
    }
out:
    cli_llm_summary_free(&llm);
    mae_counts_free(mails);
    mae_db_close(db);
    return rc;
}

const cli_command cli_admin_stats = {
    "admin", "stats", "[--json]",
    "Show counts of the three stores: mails by status, outbox and LLM summaries.",
    "emails_synced is the number of mails whose sync_status is 'synced'.\n"
    "Options:\n"
    "  --json           {\"emails_synced\", \"emails\", \"outbox\", \"llm\"} as JSON\n",
    run_stats,
};

/* ---- admin retry-dead-letter ---------------------------------------------- */

static int run_retry_dead_letter(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    bool json = false;
    int64_t id;
    mae_db *db = NULL;
    mae_outbox_row *row = NULL;
    int rc = parse_json_only(cmd, cfg, argc, argv, 1, &json);
    if (rc >= 0)
        return rc;
    if (!cli_parse_int64(argv[optind], 1, INT64_MAX, &id))
        return cli_usage_error(cmd, "invalid outbox id '%s' (a positive integer)", argv[optind]);
    if ((rc = cli_open_db(cfg, false, NULL, &db)) != CLI_OK)
        return rc;
    rc = mae_outbox_retry_dead_letter(db, id);
    if (rc == MAE_ENOTFOUND) {
        cli_error("no outbox intent with id %lld", (long long)id);
        rc = CLI_FAIL;
    } else if (rc == MAE_ESTATE) {
        /* Two reasons share the code: say which one it was. */
        if (mae_outbox_get(db, id, &row) == MAE_OK && row->status &&
            strcmp(row->status, "dead_letter") != 0)
            cli_error("outbox intent #%lld is %s, not a dead letter", (long long)id,
                      row->status);
        else
            cli_error("outbox intent #%lld cannot go back to pending: a pending intent for "
                      "the same mail, operation and target exists", (long long)id);
        rc = CLI_FAIL;
    } else if (rc != MAE_OK) {
        rc = cli_db_failure(db, "cannot retry the dead letter", rc);
    } else if (json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "outbox_id", json_object_new_int64(id));
        json_object_object_add(o, "status", json_object_new_string("pending"));
        rc = cli_json_print(o);
    } else {
        printf("outbox intent #%lld is pending again (attempts reset to 0)\n", (long long)id);
        rc = cli_finish_stdout();
    }
    mae_outbox_row_free(row);
    mae_db_close(db);
    return rc;
}

const cli_command cli_admin_retry_dead_letter = {
    "admin", "retry-dead-letter", "[--json] OUTBOX_ID",
    "Send a dead-lettered outbox intent back to pending with 0 attempts.",
    "Arguments:\n"
    "  OUTBOX_ID        the intent's outbox_id (see `mailagent email get`)\n"
    "Options:\n"
    "  --json           the result as JSON\n"
    "Exits 1 when there is no such intent or it is not a dead letter.\n",
    run_retry_dead_letter,
};
