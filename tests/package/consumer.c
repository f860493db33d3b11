/* A program outside the tree that uses only the installed package. */
#include <stdio.h>
#include <string.h>

#include <mailagent/events.h>

int main(void)
{
    mae_publisher_config cfg;
    mae_publisher *p = NULL;
    mae_publisher_config_init(&cfg); /* no URL: a disabled publisher */
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
