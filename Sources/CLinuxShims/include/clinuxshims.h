#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H
// Linux calls that Swift's Glibc module does not export.
#define _GNU_SOURCE 1
#include <pthread.h>
#include <sys/eventfd.h>

static inline int pgws_set_thread_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}
#endif
