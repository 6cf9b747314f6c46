/*
 * Hierarchical timing wheel with cascading (Varghese & Lauck, "Hashed and Hierarchical Timing
 * Wheels", SOSP 1987, scheme 7).
 *
 * Why: a TCP stack keeps several timers per connection (RTO, delayed ACK, persist, keepalive,
 * TIME-WAIT) and cancels almost all of them before they fire. A heap makes schedule O(log n) and
 * cancel either O(n) or "lazy" (dead entries kept until popped); here both are O(1) list
 * operations, and firing costs O(levels) cascades per timer over its lifetime.
 *
 * Layout
 *   - Time is integer ticks: T(k) = k * resolution seconds. `cur` is the last processed tick:
 *     every timer with tick <= cur has fired.
 *   - LEVELS levels of SLOTS slots. A timer with tick t > cur goes on the level of the highest
 *     6-bit digit in which t and cur differ, in the slot named by t's digit there. Consequences
 *     (the invariants everything below relies on): on every level < LEVELS-1, occupied slots
 *     have a digit greater than cur's, and all their timers share cur's higher digits; so the
 *     lowest occupied slot on the lowest non-empty level is the next thing to happen, and a
 *     64-bit occupancy bitmap per level finds it with one count-trailing-zeros (no scanning of
 *     empty ticks, however far the clock jumps).
 *   - A timer beyond the wheel's span (differs from cur above bit 36) is clamped into top-level
 *     slot 0, which is otherwise always empty; it is re-placed when cur reaches the start of the
 *     earliest clamped timer's span, which is never later than its own tick, so it cannot fire
 *     early (and a clock loop does not have to stop at every span boundary on the way).
 *   - Deadlines already due go on a separate "past" list, fired (sorted by tick) by the next
 *     advance().
 *   - Nodes live in one pool that grows by realloc, so links are 32-bit indices, not pointers.
 *     Each list is circular and doubly linked through a sentinel node (pool entries 0..SENTINELS-1),
 *     so unlinking needs no knowledge of which list a node is on except to clear a bitmap bit.
 *   - Handles are index | generation << 32; the generation is bumped whenever a node is freed,
 *     so a handle to a fired or cancelled timer is recognisably stale (until the 2^32nd reuse of
 *     the same node).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tcpstack_native.h"

#define BITS 6
#define SLOTS (1u << BITS) /* 64: one uint64_t occupancy bitmap per level */
#define LEVELS 6
#define SPAN_BITS (BITS * LEVELS) /* 36 bits of ticks: ~79 days at 100 us */
#define PAST_LIST (LEVELS * SLOTS)
#define SENTINELS (PAST_LIST + 1)
/* Ticks are capped so that T(k) = k * res stays exactly monotonic in k (k*res well inside a
 * double's 53-bit mantissa): ~3500 years at 100 us. A timer at MAX_TICK fires only at now=inf. */
#define MAX_TICK (1ull << 50)
#define NO_NODE UINT32_MAX
#define LIST_FREE UINT16_MAX     /* node.list of a node on the free list */
#define LIST_SENTINEL (UINT16_MAX - 1)

typedef struct {
    uint64_t tick;
    uint64_t user_id;
    uint32_t next, prev; /* pool indices; for free nodes only `next` is used (free list) */
    uint32_t gen;
    uint16_t list; /* level * SLOTS + slot, PAST_LIST, LIST_FREE or LIST_SENTINEL */
    uint16_t unused;
} node_t;

struct tcps_wheel {
    double res;
    uint64_t cur;
    node_t *nodes;
    uint32_t cap;
    uint32_t free_head;
    size_t live;
    size_t past_len;
    uint64_t past_min;    /* lower bound of the past list's ticks (not raised by cancel) */
    uint64_t clamped_min; /* lower bound of the clamped timers' ticks (ditto) */
    uint64_t occupied[LEVELS];
    uint64_t *out; /* advance() results; capacity kept >= live so firing never allocates */
    size_t out_cap;
};

/* ---- time <-> ticks: never fire early, even across float rounding ----------------------- */

static inline double tick_time(const tcps_wheel *tw, uint64_t k) { return (double)k * tw->res; }

/* Smallest k with T(k) >= deadline; so firing at any now >= T(k) is never early. */
static uint64_t deadline_to_tick(const tcps_wheel *tw, double deadline) {
    if (deadline <= 0.0)
        return 0;
    double q = deadline / tw->res;
    if (!(q < (double)(MAX_TICK - 1)))
        return MAX_TICK; /* also +inf */
    uint64_t k = (uint64_t)ceil(q);
    /* The division rounded; fix up against the multiplication we compare with. */
    while (k > 0 && tick_time(tw, k - 1) >= deadline)
        k--;
    while (tick_time(tw, k) < deadline)
        k++;
    return k;
}

/* Largest k with T(k) <= now, capped below MAX_TICK unless now is +inf. */
static uint64_t now_to_tick(const tcps_wheel *tw, double now) {
    if (!(now > 0.0))
        return 0; /* also NaN; the Python wrapper rejects NaN before we get here */
    if (isinf(now))
        return MAX_TICK;
    double q = now / tw->res;
    uint64_t k = q < (double)(MAX_TICK - 1) ? (uint64_t)floor(q) : MAX_TICK - 1;
    while (k > 0 && tick_time(tw, k) > now)
        k--;
    while (k + 1 < MAX_TICK && tick_time(tw, k + 1) <= now)
        k++;
    return k;
}

/* ---- node pool and lists ----------------------------------------------------------------- */

static int grow_pool(tcps_wheel *tw) {
    uint64_t new_cap = tw->cap ? (uint64_t)tw->cap * 2 : SENTINELS + 1024;
    if (new_cap > NO_NODE)
        new_cap = NO_NODE; /* index NO_NODE itself stays reserved */
    if (new_cap <= tw->cap)
        return -1;
    node_t *nodes = realloc(tw->nodes, (size_t)new_cap * sizeof *nodes);
    if (!nodes)
        return -1;
    /* Push the new nodes so that the lowest index is handed out first (better locality). */
    for (uint64_t i = new_cap; i-- > tw->cap;) {
        nodes[i].gen = 1;
        nodes[i].list = LIST_FREE;
        nodes[i].next = tw->free_head;
        tw->free_head = (uint32_t)i;
    }
    tw->nodes = nodes;
    tw->cap = (uint32_t)new_cap;
    return 0;
}

static inline void link_tail(tcps_wheel *tw, uint32_t list, uint32_t i) {
    node_t *n = tw->nodes;
    uint32_t last = n[list].prev;
    n[i].list = (uint16_t)list;
    n[i].prev = last;
    n[i].next = list;
    n[last].next = i;
    n[list].prev = i;
}

static inline void unlink_node(tcps_wheel *tw, uint32_t i) {
    node_t *n = tw->nodes;
    uint32_t list = n[i].list;
    n[n[i].prev].next = n[i].next;
    n[n[i].next].prev = n[i].prev;
    if (list == PAST_LIST) {
        if (--tw->past_len == 0)
            tw->past_min = UINT64_MAX;
    } else if (n[list].next == list) {
        tw->occupied[list / SLOTS] &= ~(1ull << (list % SLOTS));
        if (list == (LEVELS - 1) * SLOTS)
            tw->clamped_min = UINT64_MAX; /* keep the lower bound from going stale forever */
    }
}

static inline void free_node(tcps_wheel *tw, uint32_t i) {
    node_t *n = &tw->nodes[i];
    n->gen = n->gen + 1 ? n->gen + 1 : 1; /* generation 0 is never issued */
    n->list = LIST_FREE;
    n->next = tw->free_head;
    tw->free_head = i;
    tw->live--;
}

/* Puts node i on the list its tick calls for, relative to the current tw->cur. */
static void place(tcps_wheel *tw, uint32_t i) {
    uint64_t t = tw->nodes[i].tick;
    if (t <= tw->cur) {
        if (t < tw->past_min)
            tw->past_min = t;
        tw->past_len++;
        link_tail(tw, PAST_LIST, i);
        return;
    }
    unsigned level = (unsigned)(63 - __builtin_clzll(t ^ tw->cur)) / BITS;
    unsigned slot;
    if (level >= LEVELS) {
        level = LEVELS - 1;
        slot = 0; /* clamped: re-placed at a later span boundary, see header comment */
        if (t < tw->clamped_min)
            tw->clamped_min = t;
    } else {
        slot = (unsigned)(t >> (level * BITS)) & (SLOTS - 1);
    }
    tw->occupied[level] |= 1ull << slot;
    link_tail(tw, level * SLOTS + slot, i);
}

/* ---- public API -------------------------------------------------------------------------- */

tcps_wheel *tcps_wheel_new(double resolution, double start) {
    if (!(resolution > 0.0) || isinf(resolution))
        return NULL;
    tcps_wheel *tw = calloc(1, sizeof *tw);
    if (!tw)
        return NULL;
    tw->res = resolution;
    tw->free_head = NO_NODE;
    tw->past_min = UINT64_MAX;
    tw->clamped_min = UINT64_MAX;
    if (grow_pool(tw) != 0) {
        free(tw);
        return NULL;
    }
    /* The first SENTINELS pool entries become the list heads; take them off the free list. */
    for (uint32_t i = 0; i < SENTINELS; i++) {
        tw->nodes[i].next = tw->nodes[i].prev = i;
        tw->nodes[i].list = LIST_SENTINEL;
    }
    tw->free_head = SENTINELS;
    tw->cur = now_to_tick(tw, start);
    /* Allocated up front so that a NULL from advance() can only mean out of memory. */
    tw->out_cap = 256;
    tw->out = malloc(tw->out_cap * sizeof *tw->out);
    if (!tw->out) {
        tcps_wheel_free(tw);
        return NULL;
    }
    return tw;
}

void tcps_wheel_free(tcps_wheel *tw) {
    if (!tw)
        return;
    free(tw->nodes);
    free(tw->out);
    free(tw);
}

uint64_t tcps_wheel_schedule(tcps_wheel *tw, double deadline, uint64_t user_id) {
    if (isnan(deadline))
        return 0;
    if (tw->free_head == NO_NODE && grow_pool(tw) != 0)
        return 0;
    uint32_t i = tw->free_head;
    node_t *n = &tw->nodes[i];
    tw->free_head = n->next;
    n->tick = deadline_to_tick(tw, deadline);
    n->user_id = user_id;
    tw->live++;
    place(tw, i);
    return (uint64_t)n->gen << 32 | i;
}

bool tcps_wheel_cancel(tcps_wheel *tw, uint64_t handle) {
    uint32_t i = (uint32_t)handle;
    if (i < SENTINELS || i >= tw->cap)
        return false;
    node_t *n = &tw->nodes[i];
    if (n->list >= LIST_SENTINEL || n->gen != (uint32_t)(handle >> 32))
        return false;
    unlink_node(tw, i);
    free_node(tw, i);
    return true;
}

/* In-place heapsort of pool indices by tick. Only for the past list, which is normally short
 * and already in order; heapsort because it needs no memory and no context-free comparator
 * (qsort would need a global, and cffi releases the GIL around our calls). */
static void sift_down(const node_t *nodes, uint64_t *a, size_t root, size_t n) {
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && nodes[a[child + 1]].tick > nodes[a[child]].tick)
            child++;
        if (nodes[a[root]].tick >= nodes[a[child]].tick)
            return;
        uint64_t tmp = a[root];
        a[root] = a[child];
        a[child] = tmp;
        root = child;
    }
}

static void sort_by_tick(const node_t *nodes, uint64_t *a, size_t n) {
    size_t k;
    for (k = 1; k < n && nodes[a[k - 1]].tick <= nodes[a[k]].tick; k++) {
    }
    if (k >= n)
        return; /* already sorted: the common case */
    for (size_t i = n / 2; i-- > 0;)
        sift_down(nodes, a, i, n);
    for (size_t end = n; end-- > 1;) {
        uint64_t tmp = a[0];
        a[0] = a[end];
        a[end] = tmp;
        sift_down(nodes, a, 0, end);
    }
}

/* Detaches list `list` and returns its first node (the sentinel itself if empty). The detached
 * chain still ends at the sentinel index, which is how walkers know to stop. */
static uint32_t detach(tcps_wheel *tw, uint32_t list) {
    node_t *n = tw->nodes;
    uint32_t first = n[list].next;
    n[list].next = n[list].prev = list;
    if (list < PAST_LIST)
        tw->occupied[list / SLOTS] &= ~(1ull << (list % SLOTS));
    return first;
}

/* A node of a slot being emptied at tick e: fire it if due, else re-place it (always onto a
 * lower level, never onto the past list, since its tick is > e). */
static inline size_t expire_or_place(tcps_wheel *tw, uint32_t i, uint64_t e, uint64_t *out, size_t n) {
    if (tw->nodes[i].tick <= e) {
        out[n++] = tw->nodes[i].user_id;
        free_node(tw, i);
    } else {
        place(tw, i);
    }
    return n;
}

/*
 * Empties slot list `list` at tick e, appending fired ids to out[n..]; returns the new n.
 *
 * Walks inwards from both ends at once. With 10^6 timers the pool is far bigger than the
 * cache and each hop along a list is a cache miss that the next hop depends on; two chains give
 * the CPU two independent misses in flight (order within a slot is irrelevant: every node in a
 * level-0 slot has the same tick, and cascaded nodes are re-sorted by placement). Measured
 * a third off expiry at 10^6 timers (~195 -> ~130 ns per fired timer).
 */
static size_t drain_list(tcps_wheel *tw, uint32_t list, uint64_t e, uint64_t *out, size_t n) {
    const node_t *nodes = tw->nodes;
    uint32_t b = nodes[list].prev;
    uint32_t a = detach(tw, list);
    if (a == list)
        return n;
    for (;;) {
        if (a == b)
            return expire_or_place(tw, a, e, out, n);
        /* Read both links before either node is moved (moving rewrites its links). */
        uint32_t a_next = nodes[a].next, b_prev = nodes[b].prev;
        n = expire_or_place(tw, a, e, out, n);
        n = expire_or_place(tw, b, e, out, n);
        if (a_next == b)
            return n;
        a = a_next;
        b = b_prev;
    }
}

/* Tick of the next cascade or expiry in the wheel proper (not the past list); UINT64_MAX if the
 * wheel is empty. The lowest non-empty level always holds the earliest event, since each
 * level's events fall before the next level's next slot boundary. */
static uint64_t next_event(const tcps_wheel *tw) {
    for (unsigned level = 0; level < LEVELS; level++) {
        uint64_t bits = tw->occupied[level];
        if (!bits)
            continue;
        unsigned shift = level * BITS;
        unsigned digit = (unsigned)(tw->cur >> shift) & (SLOTS - 1);
        uint64_t later = digit == SLOTS - 1 ? 0 : bits & (~0ull << (digit + 1));
        if (later) {
            uint64_t block = tw->cur >> (shift + BITS) << (shift + BITS);
            return block | (uint64_t)__builtin_ctzll(later) << shift;
        }
        /* Only the clamped top-level slot 0 can lie at or behind cur's digit (it is the only
         * thing left in the wheel then): due at the start of the earliest clamped timer's span,
         * which is at least the next span. */
        uint64_t next_span = ((tw->cur >> SPAN_BITS) + 1) << SPAN_BITS;
        uint64_t min_span = tw->clamped_min >> SPAN_BITS << SPAN_BITS;
        return min_span > next_span ? min_span : next_span;
    }
    return UINT64_MAX;
}

const uint64_t *tcps_wheel_advance(tcps_wheel *tw, double now, size_t *n_out) {
    *n_out = 0;
    /* Reserve room for every live timer up front, so nothing can fail half-way through. */
    if (tw->out_cap < tw->live) {
        size_t cap = tw->out_cap ? tw->out_cap : 256;
        while (cap < tw->live)
            cap *= 2;
        uint64_t *out = realloc(tw->out, cap * sizeof *out);
        if (!out)
            return NULL;
        tw->out = out;
        tw->out_cap = cap;
    }
    node_t *nodes = tw->nodes;
    uint64_t *out = tw->out;
    size_t n = 0;

    /* Due-on-arrival timers first: their ticks are <= cur, below anything in the wheel. */
    if (tw->past_len) {
        for (uint32_t i = detach(tw, PAST_LIST); i != PAST_LIST; i = nodes[i].next)
            out[n++] = i;
        sort_by_tick(nodes, out, n);
        for (size_t k = 0; k < n; k++) {
            uint32_t i = (uint32_t)out[k];
            out[k] = nodes[i].user_id;
            free_node(tw, i);
        }
        tw->past_len = 0;
        tw->past_min = UINT64_MAX;
    }

    uint64_t target = now_to_tick(tw, now);
    while (target > tw->cur) {
        uint64_t e = next_event(tw);
        if (e > target)
            break;
        tw->cur = e;
        /* Cascade every level whose slot starts exactly at e. The order does not matter: a
         * re-placed timer with tick > e lands in a slot whose digit is above e's (all zero
         * below the cascading level), never in a slot being processed at e; tick == e fires. */
        for (unsigned level = LEVELS - 1; level > 0; level--) {
            unsigned shift = level * BITS;
            if (e & ((1ull << shift) - 1))
                continue;
            unsigned slot = (unsigned)(e >> shift) & (SLOTS - 1);
            if (!(tw->occupied[level] >> slot & 1))
                continue;
            uint32_t list = level * SLOTS + slot;
            if (list == (LEVELS - 1) * SLOTS)
                tw->clamped_min = UINT64_MAX; /* re-placing recomputes it */
            n = drain_list(tw, list, e, out, n);
        }
        unsigned slot = (unsigned)e & (SLOTS - 1);
        if (tw->occupied[0] >> slot & 1)
            n = drain_list(tw, slot, e, out, n); /* all due: every tick in it is e */
    }
    if (target > tw->cur)
        tw->cur = target;
    *n_out = n;
    return out;
}

double tcps_wheel_next_deadline(const tcps_wheel *tw) {
    if (!tw->live)
        return NAN;
    if (tw->past_len)
        return tick_time(tw, tw->past_min);
    uint64_t e = next_event(tw);
    if (e >= MAX_TICK)
        return INFINITY;
    return tick_time(tw, e);
}

size_t tcps_wheel_len(const tcps_wheel *tw) { return tw->live; }
