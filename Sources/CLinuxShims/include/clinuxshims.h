#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H
// Linux calls that Swift's Glibc module does not export.
#define _GNU_SOURCE 1
#include <pthread.h>
#include <spawn.h>
#include <sys/eventfd.h>

static inline int pgws_set_thread_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

// glibc 2.34+: the child closes every descriptor from `from` on, however recently opened.
static inline int pgws_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
#endif
