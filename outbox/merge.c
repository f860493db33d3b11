/* placeholder until implemented */
typedef int mae__placeholder_merge;
