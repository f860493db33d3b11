/* A program outside the tree that uses only the installed package. */
#include <stdio.h>
#include <string.h>

#include <mailagent/events.h>

/* The size handshake: the library the program runs with was built with the
 * same struct sizes as the headers it was compiled against. */
static int sizes_match(void)
{
    return mae_publisher_config_size() == sizeof(mae_publisher_config) &&
           mae_publisher_stats_size() == sizeof(mae_publisher_stats) &&
           mae_db_config_size() == sizeof(mae_db_config) &&
           mae_outbox_depth_size() == sizeof(mae_outbox_depth) &&
           mae_llm_totals_size() == sizeof(mae_llm_totals) &&
           mae_retry_outcome_size() == sizeof(mae_retry_outcome) &&
           mae_email_size() == sizeof(mae_email) &&
           mae_llm_usage_size() == sizeof(mae_llm_usage);
}

int main(void)
{
    if (!sizes_match())
        return 6;
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg); /* no URL: a disabled publisher */
    if (cfg.max_event_bytes != MAE_DEFAULT_MAX_EVENT_BYTES)
        return 7;
    if (mae_publisher_open(&cfg, &p) != MAE_OK)
        return 1;
    mae_safe_publish(p, "email.synced", 1, "{\"notion_page_id\":\"x\"}", MAE_SOURCE_SYNC_STORE);
    mae_publisher_stats st;
    mae_publisher_stats_get(p, &st);
    mae_publisher_close(p, 100);
    if (st.dropped_disabled != 1)
        return 2;
    mae_db_config dcfg;
    mae_db_config_init(&dcfg);
    dcfg.path = ":memory:";
    mae_db *db = NULL;
    if (mae_db_open(&dcfg, &db) != MAE_OK)
        return 3;
    sqlite3 *raw = mae_db_sqlite(db);
    mae_db_close(db);
    if (!raw)
        return 4;
    printf("consumer ok: %s %s\n", mae_version(), mae_strerror(MAE_ENOTFOUND));
    return strcmp(mae_version(), MAE_VERSION_STRING) == 0 ? 0 : 5;
}
