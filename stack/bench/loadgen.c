/* A short-connection load generator and echo server for `tcpstack bench cps`.
 *
 * NOT part of the cffi module: stack/bench/loadgen.py compiles this file with the system `cc` into
 * a temporary directory and runs it inside the benchmark's network namespace (`ip netns exec`), so
 * the kernel-side peer runs in its own process on its own core and never competes with the stack
 * for the GIL. One epoll loop per process: no threads, nothing to tune.
 *
 *   loadgen client ADDR PORT NPORTS SECONDS CONCURRENCY SIZE WAIT_EOF BUCKET_MS [REQUESTS]
 *       connect / send SIZE bytes / read SIZE bytes back [/ wait for the peer's FIN] / close, with
 *       CONCURRENCY connections in flight, for SECONDS; destination ports PORT..PORT+NPORTS-1 in
 *       turn. With REQUESTS > 1 each connection carries that many send/echo exchanges before it
 *       closes (persistent connections); "requests" counts every exchange. Prints one JSON object (completions per BUCKET_MS bucket, errors, latency
 *       percentiles, the kernel's peak TIME-WAIT count from /proc/net/sockstat, own CPU time).
 *   loadgen echo ADDR PORT NPORTS MAX_SECONDS
 *       echo server on PORT..PORT+NPORTS-1: echoes until EOF, then closes (so the client closes
 *       first). Prints "ready" once listening; exits on stdin EOF (the parent is gone or done),
 *       SIGTERM, or after MAX_SECONDS, whichever comes first -- it can never outlive a run by much.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define LAT_BUCKETS 20000 /* 10 us each: up to 200 ms, the rest goes into the last one */
#define LAT_STEP_US 10.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The namespace's TIME-WAIT count ("TCP: inuse N orphan N tw N ..."): per network namespace on
 * current kernels, and this process lives in the benchmark's namespace. */
static long sockstat_tw(void) {
    char buf[1024];
    int fd = open("/proc/net/sockstat", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strstr(buf, " tw ");
    return p ? strtol(p + 4, NULL, 10) : -1;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

enum phase { IDLE, CONNECTING, READING, WAIT_EOF };

struct slot {
    int fd;
    enum phase phase;
    int got;
    int reqs;
    double started;
};

/* An address of either family into *sa (port 0); its length, or 0 when it is neither. */
static socklen_t parse_addr(const char *addr, struct sockaddr_storage *sa) {
    memset(sa, 0, sizeof *sa);
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return sizeof *v4;
    }
    if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        return sizeof *v6;
    }
    return 0;
}

static void set_port(struct sockaddr_storage *sa, int port) {
    if (sa->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
}

static int client(const char *addr, int port, int nports, double seconds, int conc, int size, int wait_eof,
                  int bucket_ms, long requests) {
    struct sockaddr_storage sa;
    socklen_t salen = parse_addr(addr, &sa);
    if (!salen) {
        fprintf(stderr, "loadgen: bad address %s\n", addr);
        return 2;
    }
    int nb = (int)(seconds * 1000.0 / bucket_ms) + 2;
    long *buckets = calloc((size_t)nb, sizeof(long));
    long *lat = calloc(LAT_BUCKETS, sizeof(long));
    struct slot *slots = calloc((size_t)conc, sizeof(struct slot));
    char *payload = malloc((size_t)size), rbuf[65536];
    memset(payload, 'x', (size_t)size);
    int ep = epoll_create1(0);
    long done = 0, connect_err = 0, addr_err = 0, reset_err = 0, short_err = 0, idle_waits = 0;
    long next_port = 0, peak_tw = 0, exchanges = 0;
    double lat_sum = 0;
    struct epoll_event evs[MAX_EVENTS];

    double t0 = now_s(), end = t0 + seconds, next_sample = t0, cpu0 = cpu_seconds();
    for (int i = 0; i < conc; i++) slots[i].phase = IDLE, slots[i].fd = -1;

    for (;;) {
        double t = now_s();
        if (t >= end) break;
        if (t >= next_sample) {
            long tw = sockstat_tw();
            if (tw > peak_tw) peak_tw = tw;
            next_sample = t + 0.1;
        }
        int idle = 0;
        for (int i = 0; i < conc; i++) {
            struct slot *s = &slots[i];
            if (s->phase != IDLE) continue;
            int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) { idle++; continue; }
            set_port(&sa, (int)(port + (next_port++ % nports)));
            s->started = now_s();
            if (connect(fd, (struct sockaddr *)&sa, salen) < 0 && errno != EINPROGRESS) {
                if (errno == EADDRNOTAVAIL) addr_err++; else connect_err++;
                close(fd);
                idle++;
                continue;
            }
            s->fd = fd;
            s->phase = CONNECTING;
            struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        }
        /* A slot whose connect failed at once (no local port) retries after 1 ms, not in a spin. */
        if (idle) idle_waits++;
        double left = end - now_s(), wait = next_sample - now_s();
        if (wait > left) wait = left;
        int timeout = idle ? 1 : (int)(wait * 1000.0) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, timeout);
        for (int k = 0; k < n; k++) {
            struct slot *s = &slots[evs[k].data.u32];
            int fd = s->fd, fail = 0, finished = 0;
            if (s->phase == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err || (evs[k].events & (EPOLLERR | EPOLLHUP))) {
                    connect_err++;
                    fail = 1;
                } else if (send(fd, payload, (size_t)size, MSG_NOSIGNAL) != size) {
                    reset_err++;
                    fail = 1;
                } else {
                    s->phase = READING;
                    s->got = 0;
                    s->reqs = 0;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[k].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                }
            } else {
                for (;;) {
                    ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
                    if (r > 0) {
                        s->got += (int)r;
                        if (s->phase == READING && s->got >= size) {
                            exchanges++;
                            if (++s->reqs < requests) { /* persistent: the next request on this connection */
                                s->got -= size;
                                if (send(fd, payload, (size_t)size, MSG_NOSIGNAL) != size) {
                                    reset_err++;
                                    fail = 1;
                                    break;
                                }
                                continue;
                            }
                            if (!wait_eof) { finished = 1; break; }
                            s->phase = WAIT_EOF;
                        }
                        continue;
                    }
                    if (r == 0) {
                        if (s->phase == WAIT_EOF) finished = 1;
                        else { short_err++; fail = 1; }
                        break;
                    }
                    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                    if (errno == EINTR) continue;
                    reset_err++;
                    fail = 1;
                    break;
                }
            }
            if (finished) {
                double t1 = now_s();
                long b = (long)((t1 - t0) * 1000.0 / bucket_ms);
                if (b >= nb) b = nb - 1;
                buckets[b]++;
                double us = (t1 - s->started) * 1e6;
                long lb = (long)(us / LAT_STEP_US);
                if (lb >= LAT_BUCKETS) lb = LAT_BUCKETS - 1;
                lat[lb]++;
                lat_sum += us;
                done++;
            }
            if (finished || fail) {
                close(fd); /* the client closes first (or after the peer's FIN with WAIT_EOF) */
                s->fd = -1;
                s->phase = IDLE;
            }
        }
    }
    double elapsed = now_s() - t0, cpu = cpu_seconds() - cpu0;
    long tw = sockstat_tw();
    if (tw > peak_tw) peak_tw = tw;
    long inflight = 0;
    for (int i = 0; i < conc; i++)
        if (slots[i].fd >= 0) { close(slots[i].fd); inflight++; }
    double pct[3] = {0.5, 0.9, 0.99}, pv[3] = {0, 0, 0};
    for (int q = 0; q < 3; q++) {
        long want = (long)(pct[q] * (double)done), acc = 0;
        for (int i = 0; i < LAT_BUCKETS; i++) {
            acc += lat[i];
            if (acc > want) { pv[q] = (i + 0.5) * LAT_STEP_US; break; }
        }
    }
    printf("{\"connections\": %ld, \"requests\": %ld, \"elapsed\": %.6f, \"bucket_ms\": %d, \"buckets\": [", done, exchanges, elapsed, bucket_ms);
    int last = (int)(elapsed * 1000.0 / bucket_ms);
    if (last >= nb) last = nb - 1;
    for (int i = 0; i <= last; i++) printf("%s%ld", i ? ", " : "", buckets[i]);
    printf("], \"connect_errors\": %ld, \"addr_unavailable\": %ld, \"reset_errors\": %ld, \"short_reads\": %ld, "
           "\"in_flight_at_end\": %ld, \"peak_time_wait\": %ld, \"cpu_seconds\": %.6f, "
           "\"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f}, \"impl\": \"c\"}\n",
           connect_err, addr_err, reset_err, short_err, inflight, peak_tw, cpu, done ? lat_sum / (double)done : 0.0,
           pv[0], pv[1], pv[2]);
    fflush(stdout);
    (void)idle_waits;
    return 0;
}

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static int echo(const char *addr, int port, int nports, double max_seconds) {
    struct sockaddr_storage sa;
    socklen_t salen = parse_addr(addr, &sa);
    if (!salen) {
        fprintf(stderr, "loadgen: bad address %s\n", addr);
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    int one = 1;
    for (int i = 0; i < nports; i++) {
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        set_port(&sa, port + i);
        if (bind(fd, (struct sockaddr *)&sa, salen) < 0 || listen(fd, 4096) < 0) {
            fprintf(stderr, "loadgen: cannot listen on %s:%d: %s\n", addr, port + i, strerror(errno));
            return 1;
        }
        /* Listening sockets are tagged with the high bit so they are told apart from connections. */
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (1ULL << 32) | (uint32_t)fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = (2ULL << 32)};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev); /* stdin: EOF means the parent is done or gone */
    printf("ready\n");
    fflush(stdout);
    double end = now_s() + max_seconds;
    char buf[65536];
    struct epoll_event evs[MAX_EVENTS];
    while (!stop && now_s() < end) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 200);
        for (int k = 0; k < n; k++) {
            uint64_t tag = evs[k].data.u64 >> 32;
            int fd = (int)(uint32_t)evs[k].data.u64;
            if (tag == 2) { stop = 1; break; }
            if (tag == 1) {
                for (;;) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint32_t)c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r > 0) {
                    /* 100-byte messages always fit the send buffer; a short write would be a bug
                     * in the peer's window handling and is counted by the client as a short read. */
                    if (send(fd, buf, (size_t)r, MSG_NOSIGNAL) < 0) { close(fd); break; }
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                if (r < 0 && errno == EINTR) continue;
                close(fd); /* EOF (the client closed first) or an error: our FIN/close goes second */
                break;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if ((argc == 10 || argc == 11) && strcmp(argv[1], "client") == 0)
        return client(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atoi(argv[6]), atoi(argv[7]),
                      atoi(argv[8]), atoi(argv[9]), argc == 11 ? atol(argv[10]) : 1);
    if (argc == 6 && strcmp(argv[1], "echo") == 0)
        return echo(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    fprintf(stderr,
            "usage: loadgen client ADDR PORT NPORTS SECONDS CONCURRENCY SIZE WAIT_EOF BUCKET_MS [REQUESTS]\n"
            "       loadgen echo ADDR PORT NPORTS MAX_SECONDS\n");
    return 2;
}
