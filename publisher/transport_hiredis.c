/* placeholder until implemented */
typedef int mae__placeholder_transport_hiredis;
