/* This module implements mae_strerror and mae_version: the texts of the
 * result codes and the compiled-in version. */
#include <mailagent/common.h>
#include <mailagent/version.h>

const char *mae_strerror(int code)
{
    switch (code) {
#define MAE__ERRNO_TEXT(name, value, text)                                   \
    case MAE_##name:                                                         \
        return text;
        MAE_ERRNO_MAP(MAE__ERRNO_TEXT)
#undef MAE__ERRNO_TEXT
    default:
        return "unknown error";
    }
}

const char *mae_version(void)
{
    return MAE_VERSION_STRING;
}
