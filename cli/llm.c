/* The `mailagent llm stats` command and the LLM summary (runs by status,
 * token totals, latency) that `admin stats` shows too. */
#include <stdio.h>

#include "cli.h"

int cli_llm_summary_read(mae_db *db, cli_llm_summary *out)
{
    cli_llm_summary s = {0};
    int rc = mae_llm_store_count_by_status(db, &s.by_status);
    if (rc != MAE_OK)
        return cli_db_failure(db, "cannot count LLM runs", rc);
    if ((rc = mae_llm_store_totals(db, &s.totals)) != MAE_OK) {
        mae_counts_free(s.by_status);
        return cli_db_failure(db, "cannot read the LLM totals", rc);
    }
    *out = s;
    return CLI_OK;
}

void cli_llm_summary_free(cli_llm_summary *s)
{
    mae_counts_free(s->by_status);
    s->by_status = NULL;
}

json_object *cli_llm_summary_json(const cli_llm_summary *s)
{
    const mae_llm_totals *t = &s->totals;
    json_object *o = json_object_new_object();
    json_object *tokens = json_object_new_object();
    json_object *latency = json_object_new_object();
    json_object_object_add(tokens, "input", json_object_new_int64(t->input_tokens));
    json_object_object_add(tokens, "output", json_object_new_int64(t->output_tokens));
    json_object_object_add(tokens, "cache_read_input",
                           json_object_new_int64(t->cache_read_input_tokens));
    json_object_object_add(tokens, "cache_creation_input",
                           json_object_new_int64(t->cache_creation_input_tokens));
    json_object_object_add(latency, "mean", cli_json_fixed(t->latency_mean_ms, 1));
    json_object_object_add(latency, "p95", cli_json_fixed(t->latency_p95_ms, 1));
    json_object_object_add(o, "total", json_object_new_int64(cli_counts_total(s->by_status)));
    json_object_object_add(o, "by_status", cli_json_counts(s->by_status));
    json_object_object_add(o, "successes", json_object_new_int64(t->successes));
    json_object_object_add(o, "tokens", tokens);
    json_object_object_add(o, "latency_ms", latency);
    return o;
}

void cli_llm_summary_print(const cli_llm_summary *s)
{
    static const char *const head[] = {"LLM TOTALS", "VALUE"};
    const mae_llm_totals *t = &s->totals;
    char v[7][32];
    cli_counts_table("LLM STATUS", s->by_status);
    fputc('\n', stdout);
    cli_table *tab = cli_table_new("lr", head);
    snprintf(v[5], sizeof v[5], "%.1f", t->latency_mean_ms);
    snprintf(v[6], sizeof v[6], "%.1f", t->latency_p95_ms);
    const char *rows[][2] = {
        {"successes", cli_fmt_int(t->successes, v[0], sizeof v[0])},
        {"input tokens", cli_fmt_int(t->input_tokens, v[1], sizeof v[1])},
        {"output tokens", cli_fmt_int(t->output_tokens, v[2], sizeof v[2])},
        {"cache read tokens", cli_fmt_int(t->cache_read_input_tokens, v[3], sizeof v[3])},
        {"cache write tokens", cli_fmt_int(t->cache_creation_input_tokens, v[4], sizeof v[4])},
        {"latency mean ms", v[5]},
        {"latency p95 ms", v[6]},
    };
    for (size_t i = 0; tab && i < sizeof rows / sizeof rows[0]; i++)
        cli_table_row(tab, rows[i]);
    cli_table_print(tab);
    cli_table_free(tab);
}

static int run_stats(const cli_command *cmd, cli_config *cfg, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c, rc;
    mae_db *db = NULL;
    cli_llm_summary s = {0};

    while ((c = cli_getopt(cmd, cfg, argc, argv, "", opts)) != -1) {
        if (c == 'h')
            return CLI_OK;
        if (c != 'j')
            return CLI_USAGE;
        json = true;
    }
    if (!cli_positionals(cmd, argc, argv, 0, 0))
        return CLI_USAGE;
    if ((rc = cli_open_db(cfg, true, NULL, &db)) != CLI_OK)
        return rc;
    rc = cli_llm_summary_read(db, &s);
    mae_db_close(db);
    if (rc != CLI_OK)
        return rc;
    if (json) {
        rc = cli_json_print(cli_llm_summary_json(&s));
    } else {
        cli_llm_summary_print(&s);
        rc = cli_finish_stdout();
    }
    cli_llm_summary_free(&s);
    return rc;
}

const cli_command cli_llm_stats = {
    "llm", "stats", "[--json]",
    "Show LLM runs by status, token totals, and mean and p95 latency of successes.",
    "Options:\n"
    "  --json           {\"total\", \"by_status\", \"successes\", \"tokens\",\n"
    "                   \"latency_ms\": {\"mean\", \"p95\"}} as JSON\n",
    run_stats,
};
