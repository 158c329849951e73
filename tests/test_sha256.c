// test_sha256.c: SHA-256 against the FIPS 180-4 / NIST CAVP example vectors,
// fed whole and in uneven pieces, and a file digest.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/st_fixture.h"
#include "runtime/sha256.h"

static void hex_of(char hex[65], const char *msg, size_t n, size_t piece) {
    Sha256 s;
    sha256_init(&s);
    for (size_t at = 0; at < n; at += piece) sha256_update(&s, msg + at, n - at < piece ? n - at : piece);
    sha256_final_hex(&s, hex);
}

static void test_vectors(void **state) {
    (void)state;
    static const struct { const char *msg, *want; } V[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
         "mnopqrstnopqrstu", "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++)
        for (size_t piece = 1; piece <= 70; piece += 23) {
            hex_of(hex, V[i].msg, strlen(V[i].msg), piece);
            assert_string_equal(hex, V[i].want);
        }
    // One million 'a' (FIPS 180-2 appendix B.3), through the file digest.
    char *dir = st_fixture_tmpdir(), path[4200];
    snprintf(path, sizeof path, "%s/a.bin", dir);
    char *buf = malloc(1000000);
    memset(buf, 'a', 1000000);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, 1000000, f), 1000000);
    fclose(f);
    Error e = {{0}};
    assert_int_equal(sha256_file_hex(hex, path, &e), 0);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(buf);
    remove_tree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_vectors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
