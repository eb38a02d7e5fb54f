"""The shop's performance settings, every one in this place, each with why it is there. What
each was measured to give is in docs/performance.md (its levers table), not here: figures go
stale, the reasons do not.

Ordinary code reads none of this. The runner tunes each process as it starts; shopkit.db opens
connections with the Postgres settings; the auth service keeps argon2's buffers off its heap.
"""

import ctypes
import ctypes.util
import gc

# Postgres settings of every service connection.
POSTGRES_SESSION = {
    # asyncpg prepares every statement once per connection. Left to choose, Postgres plans the
    # busiest statements (arrays, many CTEs) again at every execution. So each is planned once,
    # for all parameters, and statements are written to need no plan of their own per call:
    # no condition that only a NULL parameter switches off (shopkit.pagination.NEWEST starts a
    # first page), one statement per index a list uses.
    "plan_cache_mode": "force_generic_plan",
    # Reading a page at random costs little more than reading the next one when the data is
    # on SSD or in memory (Postgres' documentation suggests 1.1 for that; its default models
    # spinning disks, under which a plan for any array of ids scans a whole table rather than
    # looking the few up by key).
    "random_page_cost": "1.1",
}
# A pool connection is replaced after this many statements, or this long unused.
POOL_MAX_QUERIES = 50_000
POOL_IDLE_SECONDS = 300.0

# How long the gateway keeps a service's resolved address: the pooled connections stay open
# across it, so only new connections resolve again, and a moved service is found at most this
# long after it moved.
UPSTREAM_DNS_CACHE_SECONDS = 60

# Objects allocated, less those freed, before the cyclic collector looks at the young ones.
YOUNG_GENERATION = 10_000

# glibc's mallopt parameter: allocations from this size up are mmapped, and unmapped on free.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024


def tune_garbage_collector() -> None:
    """Run once the process has started. What start-up made (modules, the app, its pools)
    lives as long as the process, yet every full collection walked it, a pause every request
    in flight waited out: frozen, it is left alone. Nearly every object a request makes is
    freed by reference counting, yet with the default young generation requests in flight
    were scanned many times a second, and promoted on the way: with a larger one, cycles are
    still collected, only later."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, oldest)


def return_large_buffers_to_the_os() -> None:
    """For a process that hashes passwords. Each argon2 hash takes its memory cost (19 MiB by
    default) and frees it; glibc raises its mmap threshold to the size of a freed mmapped
    block, so from the second hash on those blocks come from the worker thread's arena and
    stay resident: the memory cost per worker, for good. A fixed threshold keeps them mmapped,
    so they go back to the OS each time. Process-wide; other C libraries are left alone."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
