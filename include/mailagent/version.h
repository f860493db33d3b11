/* The library's version: the single place it is written. CMake reads it back. */
#ifndef MAILAGENT_VERSION_H
#define MAILAGENT_VERSION_H

#define MAE_VERSION_MAJOR 2
#define MAE_VERSION_MINOR 0
#define MAE_VERSION_PATCH 0
#define MAE_VERSION_STRING "2.0.0"

#endif
