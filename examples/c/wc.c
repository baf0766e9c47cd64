/*
 * wc: an Agora job in C. stdin is the task input; stdout gets one line,
 *
 *     lines words bytes crc32
 *
 * as `wc` counts them (a word is a run of bytes that are not ASCII
 * whitespace) and the CRC-32 (IEEE, as zlib's) of the input in hex.
 *
 * Build (Debian: clang, lld, wasi-libc, libclang-rt-14-dev-wasm32):
 *
 *     clang --target=wasm32-wasi -O2 -o wc.wasm wc.c
 *
 * Nothing here is specific to Agora: any WASI command that reads stdin and
 * writes stdout is a job.
 */
#include <stdint.h>
#include <stdio.h>

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[n] = c;
    }
}

static int is_space(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

int main(void) {
    unsigned char buf[65536];
    unsigned long long lines = 0, words = 0, bytes = 0;
    uint32_t crc = 0xFFFFFFFFu;
    int in_word = 0;
    size_t n;

    crc_init();
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        for (size_t i = 0; i < n; i++) {
            int c = buf[i];
            crc = crc_table[(crc ^ (uint32_t)c) & 0xFF] ^ (crc >> 8);
            if (c == '\n') {
                lines++;
            }
            if (is_space(c)) {
                in_word = 0;
            } else if (!in_word) {
                in_word = 1;
                words++;
            }
        }
        bytes += n;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "wc: cannot read stdin\n");
        return 1;
    }
    printf("%llu %llu %llu %08x\n", lines, words, bytes, crc ^ 0xFFFFFFFFu);
    return 0;
}
