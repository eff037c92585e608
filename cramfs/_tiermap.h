// The DRAM tier's index (_dramtier.pyx): C++, in a header so that _dramtier.pxd can
// declare NativeTier's fields for the modules that cimport it.
#pragma once
#include <vector>
#include <cstdint>
// The DRAM tier's index: a promoted page, named by its table's address and its
// index, to the slot of its node. The node holds the table, so the address
// cannot be reused while the entry exists.
//
// Open addressing with linear probing in one array, at most half full, and
// deletion by backward shift (no tombstones): a lookup reads a cache line or
// two, and promotion and demotion allocate nothing. (std::unordered_map
// chased and allocated a node per entry: a tenth of a replay.) Every position
// is masked to the array, whose accesses are bounds-checked in the ASan build.
struct cram_tier_entry {
    uintptr_t table;     // 0: empty (no object lives at address 0)
    long long idx;
    uint32_t slot;
};
struct cram_tier_map {
    std::vector<cram_tier_entry> e;
    size_t n = 0;
    size_t size() const { return n; }
    void clear() { e.clear(); n = 0; }
};
static inline size_t cram_tier_hash(uintptr_t t, long long i) {
    uint64_t h = (uint64_t)t * 0x9E3779B97F4A7C15ULL ^ (uint64_t)i;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ULL;
    return (size_t)(h ^ (h >> 29));
}
// the position of (t, i) in e, or of the empty entry that ends its probe
static inline size_t cram_tier_at(const std::vector<cram_tier_entry> &e, uintptr_t t,
                                  long long i) {
    size_t mask = e.size() - 1;
    size_t p = cram_tier_hash(t, i) & mask;
    while (e[p].table && !(e[p].table == t && e[p].idx == i))
        p = (p + 1) & mask;
    return p;
}
static inline size_t cram_tier_pos(const cram_tier_map &m, uintptr_t t, long long i) {
    return cram_tier_at(m.e, t, i);
}
static inline long long cram_tier_find(const cram_tier_map &m, uintptr_t t,
                                       long long i) {
    if (m.e.empty())
        return -1;
    const cram_tier_entry &x = m.e[cram_tier_pos(m, t, i)];
    return x.table ? (long long)x.slot : -1;
}
// twice the room; if the allocation fails (bad_alloc) the index is as it was
static void cram_tier_grow(cram_tier_map &m) {
    std::vector<cram_tier_entry> bigger(m.e.empty() ? 64 : m.e.size() * 2,
                                        cram_tier_entry{0, 0, 0});
    for (const cram_tier_entry &x : m.e)
        if (x.table)
            bigger[cram_tier_at(bigger, x.table, x.idx)] = x;
    m.e.swap(bigger);
}
// insert (t, i) -> slot if absent and return -1; else return the slot it has
static inline long long cram_tier_add(cram_tier_map &m, uintptr_t t, long long i,
                                      uint32_t slot) {
    if ((m.n + 1) * 2 > m.e.size())
        cram_tier_grow(m);
    cram_tier_entry &x = m.e[cram_tier_pos(m, t, i)];
    if (x.table)
        return (long long)x.slot;
    x = cram_tier_entry{t, i, slot};
    m.n++;
    return -1;
}
static inline long long cram_tier_take(cram_tier_map &m, uintptr_t t, long long i) {
    if (m.e.empty())
        return -1;
    size_t mask = m.e.size() - 1;
    size_t hole = cram_tier_pos(m, t, i);
    if (!m.e[hole].table)
        return -1;
    long long slot = m.e[hole].slot;
    // backward shift: move up each later entry of the run whose home is not
    // cyclically within (hole, q], so every probe still finds its key
    for (size_t q = (hole + 1) & mask; m.e[q].table; q = (q + 1) & mask) {
        size_t home = cram_tier_hash(m.e[q].table, m.e[q].idx) & mask;
        bool stays = hole < q ? (hole < home && home <= q) : (hole < home || home <= q);
        if (!stays) {
            m.e[hole] = m.e[q];
            hole = q;
        }
    }
    m.e[hole] = cram_tier_entry{0, 0, 0};
    m.n--;
    return slot;
}
