// The floor of a paced fan-out, two ways: one write(2) per socket (what the bench's floor
// and NIO do), and io_uring, where one io_uring_enter carries the sends of every socket of a
// pass. Issue 8 asked whether fewer system calls would take the server below the write(2)
// floor; this answers it before anything is built into the server.
//
// N loopback TCP connections; a reader thread drains the client ends with epoll; the sender
// writes one 64 B frame to every server end per pass, passes paced at --rate per second.
// Reported: the sender's CPU per send (the process's CPU minus the reader thread's), for
// each mode, run alternately in one process so that both see the same machine.
//
// Build and run: make bench-uring (needs liburing-dev, which it installs when missing).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { payload_size = 64 };

static int sockets = 1000, passes = 300, rounds = 3;
static double rate = 100;
static int *server_ends, *client_ends;
static atomic_long received;
static atomic_int stop_reader;
static double reader_cpu;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double cpu_seconds(int who) {
    struct rusage usage;
    getrusage(who, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *reader(void *unused) {
    (void)unused;
    int epoll = epoll_create1(0);
    for (int i = 0; i < sockets; i++) {
        struct epoll_event event = {.events = EPOLLIN, .data.fd = client_ends[i]};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, client_ends[i], &event) != 0) die("epoll_ctl");
    }
    struct epoll_event events[256];
    char buffer[65536];
    while (!atomic_load(&stop_reader)) {
        int ready = epoll_wait(epoll, events, 256, 100);
        for (int i = 0; i < ready; i++) {
            ssize_t n = read(events[i].data.fd, buffer, sizeof buffer);
            if (n > 0) atomic_fetch_add(&received, n);
        }
    }
    reader_cpu = cpu_seconds(RUSAGE_THREAD);
    close(epoll);
    return NULL;
}

static void connect_all(void) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0) die("bind");
    if (listen(listener, 4096) != 0) die("listen");
    getsockname(listener, (struct sockaddr *)&address, &length);
    server_ends = calloc(sockets, sizeof(int));
    client_ends = calloc(sockets, sizeof(int));
    int one = 1;
    for (int i = 0; i < sockets; i++) {
        client_ends[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(client_ends[i], (struct sockaddr *)&address, sizeof address) != 0) die("connect");
        server_ends[i] = accept(listener, NULL, NULL);
        if (server_ends[i] < 0) die("accept");
        setsockopt(server_ends[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    close(listener);
}

static const char payload[payload_size] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde";

static void pass_with_write(void) {
    for (int i = 0; i < sockets; i++) {
        if (write(server_ends[i], payload, payload_size) != payload_size) die("write (short or EAGAIN)");
    }
}

static struct io_uring ring;

static void pass_with_uring(void) {
    int queued = 0;
    for (int i = 0; i < sockets; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        if (!sqe) die("io_uring_get_sqe");
        io_uring_prep_send(sqe, server_ends[i], payload, payload_size, 0);
        queued++;
    }
    // One system call submits every send and waits for all of them.
    if (io_uring_submit_and_wait(&ring, queued) < queued) die("io_uring_submit_and_wait");
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
        if (cqe->res != payload_size) {
            fprintf(stderr, "send: %d\n", cqe->res);
            exit(1);
        }
        seen++;
    }
    io_uring_cq_advance(&ring, seen);
    if ((int)seen != queued) die("missing completions");
}

// The sender thread's CPU per send (µs) of one paced run; io_uring's inline sends run in it.
static double run(void (*pass)(void)) {
    long expected = atomic_load(&received) + (long)sockets * passes * payload_size;
    double sender_before = cpu_seconds(RUSAGE_THREAD);
    double start = now();
    for (int p = 0; p < passes; p++) {
        pass();
        double wait = start + (p + 1) / rate - now();
        if (wait > 0) {
            struct timespec t = {.tv_sec = (time_t)wait, .tv_nsec = (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&t, NULL);
        }
    }
    while (atomic_load(&received) < expected) usleep(1000);
    return (cpu_seconds(RUSAGE_THREAD) - sender_before) * 1e6 / ((double)sockets * passes);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--sockets")) sockets = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--passes")) passes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--sockets N] [--passes N] [--rate PER_SECOND] [--rounds N]\n", argv[0]);
            return 2;
        }
    }
    struct rlimit files = {.rlim_cur = 65536, .rlim_max = 65536};
    setrlimit(RLIMIT_NOFILE, &files);
    connect_all();
    struct io_uring_params params = {0};
    unsigned entries = 1;
    while (entries < (unsigned)sockets) entries <<= 1;
    if (io_uring_queue_init_params(entries, &ring, &params) != 0) die("io_uring_queue_init");
    pthread_t thread;
    pthread_create(&thread, NULL, reader, NULL);

    printf("%d sockets, %d passes of one %d B send each at %.0f passes/s, %d rounds alternating\n", sockets, passes,
           payload_size, rate, rounds);
    double sum_write = 0, sum_uring = 0;
    for (int r = 0; r < rounds; r++) {
        double w = run(pass_with_write);
        double u = run(pass_with_uring);
        printf("round %d: write(2) %.2f us/send, io_uring %.2f us/send, ratio %.2f\n", r + 1, w, u, u / w);
        fflush(stdout);
        sum_write += w;
        sum_uring += u;
    }
    printf("mean: write(2) %.2f us/send, io_uring %.2f us/send, io_uring/write(2) %.2f\n", sum_write / rounds,
           sum_uring / rounds, sum_uring / sum_write);
    atomic_store(&stop_reader, 1);
    pthread_join(thread, NULL);
    // Sends the kernel handed to io-wq workers would be CPU of neither the sender nor the
    // reader: this shows whether there was any.
    double others = cpu_seconds(RUSAGE_SELF) - cpu_seconds(RUSAGE_THREAD) - reader_cpu;
    printf("CPU of other threads (io-wq workers): %.3f s\n", others);
    io_uring_queue_exit(&ring);
    for (int i = 0; i < sockets; i++) {
        close(server_ends[i]);
        close(client_ends[i]);
    }
    return 0;
}
