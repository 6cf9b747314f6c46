/*
 * tcpstack native core: Internet checksum and a hierarchical timing wheel.
 *
 * These are the two per-segment / per-timer hot paths of the stack that are too slow in pure
 * Python. Everything here is consumed through cffi (API mode, out of line, module
 * `stack._native`); the Python-facing contract lives in stack/native.py, which is the only
 * importer. Keep the declarations below in sync with CDEF in native/build_native.py -- the
 * cffi-generated C file includes this header, so a mismatch fails the build instead of
 * silently miscalling.
 */
#ifndef TCPSTACK_NATIVE_H
#define TCPSTACK_NATIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- checksum.c (RFC 1071, RFC 1624) ------------------------------------------------------ */

/* 16-bit folded one's-complement sum (not inverted) of data, plus `initial` (a previous result,
 * as the big-endian 16-bit value). Chainable when every earlier chunk had even length. */
uint16_t tcps_ones_complement_sum(const void *data, size_t len, uint32_t initial);

/* ~ones_complement_sum: the value to store in a checksum field; 0 when verifying good data. */
uint16_t tcps_internet_checksum(const void *data, size_t len, uint32_t initial);

/* TCP checksum with the IPv4 (RFC 793 section 3.1) or IPv6 (RFC 8200 section 8.1) pseudo-header. */
uint16_t tcps_tcp_checksum_ipv4(const uint8_t *src, const uint8_t *dst, const void *seg, size_t len);
uint16_t tcps_tcp_checksum_ipv6(const uint8_t *src, const uint8_t *dst, const void *seg, size_t len);

/* RFC 1624 eqn. 3 incremental update when one 16-bit (or one aligned 32-bit) field changes. */
uint16_t tcps_checksum_adjust(uint16_t checksum, uint16_t old_word, uint16_t new_word);
uint16_t tcps_checksum_adjust32(uint16_t checksum, uint32_t old_value, uint32_t new_value);

/* ---- timerwheel.c ------------------------------------------------------------------------ */

typedef struct tcps_wheel tcps_wheel;

/* NULL on allocation failure. `resolution` > 0 seconds per tick; `start` >= 0 seconds. */
tcps_wheel *tcps_wheel_new(double resolution, double start);
void tcps_wheel_free(tcps_wheel *tw);

/* Returns a nonzero handle (pool index | generation << 32), or 0 if deadline is NaN or memory
 * ran out. */
uint64_t tcps_wheel_schedule(tcps_wheel *tw, double deadline, uint64_t user_id);

/* true if the timer was live and is now cancelled; false for fired/cancelled/stale handles. */
bool tcps_wheel_cancel(tcps_wheel *tw, uint64_t handle);

/* Fires every timer due at `now`; returns a pointer to their user ids (owned by the wheel, valid
 * until the next call) and stores the count in *n. Returns NULL (state untouched, *n = 0) only
 * if the output buffer could not be grown. */
const uint64_t *tcps_wheel_advance(tcps_wheel *tw, double now, size_t *n);

/* Earliest time at which advance() can fire or cascade something; +inf for timers clamped at
 * the end of time; NaN when empty. */
double tcps_wheel_next_deadline(const tcps_wheel *tw);

size_t tcps_wheel_len(const tcps_wheel *tw);

#endif /* TCPSTACK_NATIVE_H */
