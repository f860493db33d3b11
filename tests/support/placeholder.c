/* placeholder */
typedef int mae__support_placeholder;
