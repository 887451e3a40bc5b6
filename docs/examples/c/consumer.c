/* A complete streamrnn/1 consumer in C against libzmq, written from docs/protocol.md alone.
 *
 * Subscribes to a topic prefix, checks every message (3 frames, 64-byte header, magic, version,
 * kind, topic, payload size) and prints one JSON object per message on stdout; predictions carry
 * their rows in "data", desc/event/stats their JSON in "meta".  Bad messages are named on stderr.
 *
 *   cc -std=c11 -O2 -Wall -o consumer consumer.c $(pkg-config --cflags --libs libzmq)
 *   ./consumer --endpoint tcp://127.0.0.1:5556 --topic out/c0/ --until-eos 1 --timeout 10
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define HEADER_SIZE 64
static const char *KINDS[] = {NULL, "data", "pred", "desc", "hb", "eos", "event", "stats"};
static const char *FLAGS[] = {"gap", "overflow", "reset", "end"};

static uint32_t get_u32(const unsigned char *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static double get_f64(const unsigned char *p) { uint64_t v = get_u64(p); double d; memcpy(&d, &v, 8); return d; }

static double mono(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec * 1e-9; }

/* One message's frames: the first `max` into msgs (initialised here, closed by the caller), the rest
 * received and dropped; returns the number of frames, or -1 on error. */
static int recv_frames(void *sock, zmq_msg_t *msgs, int max) {
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t extra, *m = n < max ? &msgs[n] : &extra;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, 0) < 0) {
            for (int i = 0; i <= n && i < max; i++) zmq_msg_close(&msgs[i]);
            return -1;
        }
        more = zmq_msg_more(m);
        if (m == &extra) zmq_msg_close(m);
        n++;
    }
    return n;
}

/* Print one message as JSON, or explain on stderr why it is bad; returns its kind (0: bad). */
static int print_message(zmq_msg_t *f, int n) {
    if (n != 3) { fprintf(stderr, "skipped: %d frames, expected 3\n", n); return 0; }
    const char *topic = zmq_msg_data(&f[0]);
    size_t tlen = zmq_msg_size(&f[0]), plen = zmq_msg_size(&f[2]);
    const unsigned char *h = zmq_msg_data(&f[1]), *payload = zmq_msg_data(&f[2]);
    if (zmq_msg_size(&f[1]) != HEADER_SIZE) { fprintf(stderr, "skipped: header of %zu bytes\n", zmq_msg_size(&f[1])); return 0; }
    if (memcmp(h, "SRNN", 4) != 0) { fprintf(stderr, "skipped: bad magic\n"); return 0; }
    if (h[4] != 1) { fprintf(stderr, "skipped: protocol version %d is not 1\n", h[4]); return 0; }
    int kind = h[5], dtype = h[6], flags = h[7];
    if (kind < 1 || kind > 7) { fprintf(stderr, "skipped: kind %d\n", kind); return 0; }
    char tbuf[160];
    if (tlen >= sizeof tbuf) { fprintf(stderr, "skipped: topic too long\n"); return 0; }
    memcpy(tbuf, topic, tlen);
    tbuf[tlen] = 0;
    char *s1 = strchr(tbuf, '/'), *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s1 || !s2 || strcmp(s2 + 1, KINDS[kind]) != 0) { fprintf(stderr, "skipped: topic %s vs kind %s\n", tbuf, KINDS[kind]); return 0; }
    *s2 = 0;
    uint32_t n_rows = get_u32(h + 8), n_cols = get_u32(h + 12);
    if ((kind == 1 || kind == 2) && (dtype != 1 || n_cols == 0 || plen != (size_t)n_rows * n_cols * 4)) {
        fprintf(stderr, "skipped: %s payload of %zu bytes for %u x %u (this consumer reads float32)\n", KINDS[kind], plen, n_rows, n_cols);
        return 0;
    }
    printf("{\"topic\": \"%.*s\", \"kind\": \"%s\", \"stream\": \"%s\", \"epoch\": %llu, \"seq\": %llu, "
           "\"sample_index\": %llu, \"t_capture\": %.17g, \"t_send\": %.17g, \"ref_seq\": %llu, \"flags\": [",
           (int)tlen, topic, KINDS[kind], s1 + 1, (unsigned long long)get_u64(h + 16),
           (unsigned long long)get_u64(h + 24), (unsigned long long)get_u64(h + 32), get_f64(h + 40),
           get_f64(h + 48), (unsigned long long)get_u64(h + 56));
    for (int b = 0, first = 1; b < 4; b++)
        if (flags & (1 << b)) { printf("%s\"%s\"", first ? "" : ", ", FLAGS[b]); first = 0; }
    printf("]");
    if (kind == 1 || kind == 2) {          /* rows of float32, little-endian */
        printf(", \"data\": [");
        for (uint32_t r = 0; r < n_rows; r++) {
            printf("%s[", r ? ", " : "");
            for (uint32_t c = 0; c < n_cols; c++) {
                uint32_t bits = get_u32(payload + 4 * ((size_t)r * n_cols + c));
                float v;
                memcpy(&v, &bits, 4);
                printf("%s%.9g", c ? ", " : "", v);
            }
            printf("]");
        }
        printf("]");
    } else if (kind == 3 || kind == 6 || kind == 7) {   /* a JSON object: passed through */
        printf(", \"meta\": %.*s", (int)plen, (const char *)payload);
    }
    printf("}\n");
    fflush(stdout);
    return kind;
}

int main(int argc, char **argv) {
    const char *endpoint = "tcp://127.0.0.1:5556", *topic = "out/";
    int until_eos = 0;
    double timeout = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--endpoint")) endpoint = argv[i + 1];
        else if (!strcmp(argv[i], "--topic")) topic = argv[i + 1];
        else if (!strcmp(argv[i], "--until-eos")) until_eos = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout")) timeout = atof(argv[i + 1]);
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_SUB);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, topic, strlen(topic));
    if (zmq_connect(sock, endpoint) != 0) { fprintf(stderr, "connect %s: %s\n", endpoint, zmq_strerror(zmq_errno())); return 1; }
    printf("{\"ready\": true}\n");         /* tells a supervisor we are listening */
    fflush(stdout);

    int n_eos = 0;
    double last = mono();
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    while (!until_eos || n_eos < until_eos) {
        if (zmq_poll(&item, 1, 100) <= 0) {
            if (timeout > 0 && mono() - last > timeout) break;
            continue;
        }
        last = mono();
        zmq_msg_t f[3];
        int n = recv_frames(sock, f, 3);
        if (n < 0) break;
        n_eos += print_message(f, n) == 5;
        for (int i = 0; i < (n < 3 ? n : 3); i++) zmq_msg_close(&f[i]);
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
