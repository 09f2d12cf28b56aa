#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H
// Linux calls that Swift's Glibc module does not export.
#define _GNU_SOURCE 1
#include <pthread.h>
#include <sys/eventfd.h>

static inline int pgws_set_thread_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

// glibc 2.34+: the child closes every descriptor from `from` on, however recently opened.
// `actions` is a posix_spawn_file_actions_t *; spawn.h stays out of this header, whose
// _GNU_SOURCE would give its fd_set a definition that clashes with other modules'.
int pgws_spawn_close_from(void *actions, int from);
#endif
