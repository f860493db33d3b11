/* placeholder until implemented */
typedef int mae__placeholder_sync_store;
