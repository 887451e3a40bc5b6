/* A complete streamrnn/1 producer in C against libzmq, written from docs/protocol.md alone.
 *
 * Sends a test tone (or silence) as one audio stream over PUSH: a descriptor, float32 data blocks
 * (the descriptor again every second), and an end-of-stream message.  As fast as possible by default:
 * each block is stamped "now minus its duration"; --realtime paces it like a microphone.
 *
 *   cc -std=c11 -O2 -Wall -o producer producer.c $(pkg-config --cflags --libs libzmq) -lm
 *   ./producer --endpoint tcp://127.0.0.1:5555 --stream c0 --rate 16000 --seconds 2 --tone 440
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

enum { DATA = 1, DESC = 3, EOS = 5 };      /* message kinds */
enum { DT_NONE = 0, DT_F32 = 1 };          /* dtypes */
enum { FLAG_END = 8 };
#define HEADER_SIZE 64
static const double PI = 3.14159265358979323846;

static double now(void) {                  /* Unix seconds */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_f64(unsigned char *p, double d) { uint64_t v; memcpy(&v, &d, 8); put_u64(p, v); }

/* The 64-byte little-endian header: <4sBBBBIIQQQddQ */
static void header(unsigned char *h, int kind, int dtype, int flags, uint32_t n_rows, uint32_t n_cols,
                   uint64_t epoch, uint64_t seq, uint64_t sample_index, double t_capture) {
    memcpy(h, "SRNN", 4);
    h[4] = 1;                               /* version */
    h[5] = (unsigned char)kind;
    h[6] = (unsigned char)dtype;
    h[7] = (unsigned char)flags;
    put_u32(h + 8, n_rows);
    put_u32(h + 12, n_cols);
    put_u64(h + 16, epoch);
    put_u64(h + 24, seq);
    put_u64(h + 32, sample_index);
    put_f64(h + 40, t_capture);
    put_f64(h + 48, now());                 /* t_send */
    put_u64(h + 56, 0);                     /* ref_seq: 0 on everything a producer sends */
}

static int send3(void *sock, const char *topic, const unsigned char *h, const void *payload, size_t n) {
    if (zmq_send(sock, topic, strlen(topic), ZMQ_SNDMORE) < 0) return -1;
    if (zmq_send(sock, h, HEADER_SIZE, ZMQ_SNDMORE) < 0) return -1;
    return zmq_send(sock, payload, n, 0) < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    const char *endpoint = "tcp://127.0.0.1:5555", *stream = "c0";
    double rate = 16000, seconds = 2, tone = 440;
    int block = 320, realtime = 0;
    uint64_t epoch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--realtime")) { realtime = 1; continue; }
        if (!v) { fprintf(stderr, "%s needs a value\n", a); return 2; }
        if (!strcmp(a, "--endpoint")) endpoint = v;
        else if (!strcmp(a, "--stream")) stream = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--tone")) tone = atof(v);
        else if (!strcmp(a, "--block")) block = atoi(v);
        else if (!strcmp(a, "--epoch")) epoch = strtoull(v, NULL, 10);
        else { fprintf(stderr, "unknown option %s\n", a); return 2; }
        i++;
    }
    if (block < 1 || rate <= 0 || seconds < 0) { fprintf(stderr, "bad --block, --rate or --seconds\n"); return 2; }
    if (epoch == 0) {                       /* random, 1 .. 2^53-1: exact in every JSON */
        srand((unsigned)(now() * 1e6));
        epoch = ((((uint64_t)rand() << 31) ^ (uint64_t)rand()) & ((1ULL << 53) - 1)) | 1;
    }
    size_t n = (size_t)(seconds * rate);

    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 5000;                      /* ms: deliver what is queued, then give up */
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, endpoint) != 0) { fprintf(stderr, "connect %s: %s\n", endpoint, zmq_strerror(zmq_errno())); return 1; }

    char topic[96], desc[512];
    unsigned char h[HEADER_SIZE];
    unsigned char *payload = malloc((size_t)block * 4);
    uint64_t seq_desc = 0, seq_data = 0, index = 0;
    snprintf(desc, sizeof desc,
             "{\"format\": \"streamrnn/1\", \"stream\": \"%s\", \"epoch\": %llu, \"content\": \"audio\", "
             "\"dtype\": \"float32\", \"channels\": 1, \"rate\": %.17g, \"labels\": null}",
             stream, (unsigned long long)epoch, rate);
    double t0 = now(), last_desc = t0;

    snprintf(topic, sizeof topic, "in/%s/desc", stream);   /* descriptor first */
    header(h, DESC, DT_NONE, 0, 0, 0, epoch, seq_desc++, 0, t0);
    send3(sock, topic, h, desc, strlen(desc));

    for (size_t i = 0; i < n; i += (size_t)block) {
        uint32_t rows = (uint32_t)(n - i < (size_t)block ? n - i : (size_t)block);
        for (uint32_t k = 0; k < rows; k++) {
            float s = (float)(0.5 * sin(2 * PI * tone * (double)(i + k) / rate));
            uint32_t bits;
            memcpy(&bits, &s, 4);
            put_u32(payload + 4 * k, bits);   /* float32, little-endian */
        }
        double t_capture;
        if (realtime) {                     /* a live source has a block once its last sample is in */
            double due = t0 + (double)(index + rows) / rate, wait = due - now();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
            t_capture = t0 + (double)index / rate;
        } else {                            /* as fast as possible: the block ends now */
            t_capture = now() - rows / rate;
        }
        snprintf(topic, sizeof topic, "in/%s/data", stream);
        header(h, DATA, DT_F32, 0, rows, 1, epoch, seq_data++, index, t_capture);
        if (send3(sock, topic, h, payload, (size_t)rows * 4) != 0) { fprintf(stderr, "send failed\n"); return 1; }
        index += rows;
        if (now() - last_desc >= 1.0) {     /* late subscribers catch up */
            snprintf(topic, sizeof topic, "in/%s/desc", stream);
            header(h, DESC, DT_NONE, 0, 0, 0, epoch, seq_desc++, index, now());
            send3(sock, topic, h, desc, strlen(desc));
            last_desc = now();
        }
    }
    snprintf(topic, sizeof topic, "in/%s/eos", stream);    /* eos: end flag, sample_index = rows sent */
    header(h, EOS, DT_NONE, FLAG_END, 0, 0, epoch, 0, index, now());
    send3(sock, topic, h, "", 0);

    zmq_close(sock);                        /* waits up to LINGER for delivery */
    zmq_ctx_term(ctx);
    free(payload);
    printf("{\"stream\": \"%s\", \"epoch\": %llu, \"messages\": %llu, \"rows\": %llu}\n", stream,
           (unsigned long long)epoch, (unsigned long long)seq_data, (unsigned long long)index);
    return 0;
}
