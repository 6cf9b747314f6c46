"""cffi builder for ``stack._native`` (API mode, out of line).

Wired into packaging by ``setup.py``'s ``cffi_modules=["native/build_native.py:ffibuilder"]``: any
setuptools build (``pip install -e .``, ``pip install .``, a wheel build) generates ``_native.c``
from CDEF + the C sources below and compiles it. API mode (rather than ABI/dlopen) so the C
compiler checks CDEF against ``tcpstack_native.h`` and calls are direct, not through libffi.

Run ``python native/build_native.py`` from the repo root to rebuild in place without pip.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _rel(p: Path) -> str:
    # setuptools wants source paths relative to the project root (the cwd of a pip build);
    # absolute is fine for the direct build below when run from another directory.
    if Path.cwd().resolve() == HERE.parent:
        return os.path.relpath(p)
    return str(p)


# Must match native/tcpstack_native.h (the generated C includes that header, so a mismatch is a
# compile error rather than a silent ABI bug).
CDEF = """
uint16_t tcps_ones_complement_sum(const void *data, size_t len, uint32_t initial);
uint16_t tcps_internet_checksum(const void *data, size_t len, uint32_t initial);
uint16_t tcps_tcp_checksum_ipv4(const uint8_t *src, const uint8_t *dst, const void *seg, size_t len);
uint16_t tcps_tcp_checksum_ipv6(const uint8_t *src, const uint8_t *dst, const void *seg, size_t len);
uint16_t tcps_checksum_adjust(uint16_t checksum, uint16_t old_word, uint16_t new_word);
uint16_t tcps_checksum_adjust32(uint16_t checksum, uint32_t old_value, uint32_t new_value);

typedef struct tcps_wheel tcps_wheel;
tcps_wheel *tcps_wheel_new(double resolution, double start);
void tcps_wheel_free(tcps_wheel *tw);
uint64_t tcps_wheel_schedule(tcps_wheel *tw, double deadline, uint64_t user_id);
bool tcps_wheel_cancel(tcps_wheel *tw, uint64_t handle);
const uint64_t *tcps_wheel_advance(tcps_wheel *tw, double now, size_t *n);
double tcps_wheel_next_deadline(const tcps_wheel *tw);
size_t tcps_wheel_len(const tcps_wheel *tw);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "stack._native",
    '#include "tcpstack_native.h"',
    sources=[_rel(HERE / "checksum.c"), _rel(HERE / "timerwheel.c")],
    include_dirs=[_rel(HERE)],
    depends=[_rel(HERE / "tcpstack_native.h")],
    # Appended after Python's own CFLAGS, so -O2 here wins over a -O3 from sysconfig.
    extra_compile_args=["-Wall", "-Wextra", "-O2"],
    libraries=["m"],
)

if __name__ == "__main__":
    # Out-of-line build into the source tree: writes stack/_native.c and stack/_native*.so.
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=True)
