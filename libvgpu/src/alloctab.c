/*
 * What this process allocated: (kind, handle) -> (device, size), so that a
 * free gives back exactly what was reserved. Open addressing in anonymous
 * memory (no malloc: the table must work whatever the program's allocator),
 * under a spinlock held only for a lookup or an insert.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "vgpu.h"

struct entry {
	uint64_t key;
	uint64_t size;
	uint64_t aux;
	int32_t refs;
	int16_t idx;
	uint8_t kind; /* 0 = empty */
	uint8_t gone; /* tombstone */
};

static struct entry *tab;
static size_t cap, used; /* used counts live entries and tombstones */
static char lock;

static void lock_tab(void)
{
	while (__atomic_test_and_set(&lock, __ATOMIC_ACQUIRE))
#if defined(__x86_64__)
		__builtin_ia32_pause();
#endif
		;
}

static void unlock_tab(void)
{
	__atomic_clear(&lock, __ATOMIC_RELEASE);
}

static size_t slot_of(uint64_t key, int kind, size_t c)
{
	uint64_t h = (key ^ ((uint64_t)kind << 56)) * 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 20) & (c - 1);
}

/* Rehash without tombstones; double only when live entries need it. */
static int grow(void)
{
	size_t live = 0, ncap = cap ? cap : 4096;
	for (size_t i = 0; i < cap; i++)
		live += tab[i].kind && !tab[i].gone;
	if ((live + 1) * 2 > ncap)
		ncap *= 2;
	struct entry *n = mmap(NULL, ncap * sizeof(*n), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (n == MAP_FAILED)
		return -1;
	live = 0;
	for (size_t i = 0; i < cap; i++) {
		struct entry *e = &tab[i];
		if (!e->kind || e->gone)
			continue;
		size_t j = slot_of(e->key, e->kind, ncap);
		while (n[j].kind)
			j = (j + 1) & (ncap - 1);
		n[j] = *e;
		live++;
	}
	if (tab)
		munmap(tab, cap * sizeof(*tab));
	tab = n;
	cap = ncap;
	used = live;
	return 0;
}

void vgpu_tab_add(int kind, uint64_t key, const struct vgpu_rec *rec)
{
	lock_tab();
	if ((used + 1) * 10 > cap * 7 && grow() != 0) {
		unlock_tab();
		vgpu_log(VGPU_LOG_ERROR, "out of memory for the allocation table: an allocation will not be freed");
		return;
	}
	size_t j = slot_of(key, kind, cap);
	while (tab[j].kind && !tab[j].gone)
		j = (j + 1) & (cap - 1);
	if (!tab[j].kind)
		used++;
	tab[j] = (struct entry){.key = key, .size = rec->size, .aux = rec->aux, .refs = rec->refs,
				.idx = (int16_t)rec->idx, .kind = (uint8_t)kind};
	unlock_tab();
}

void vgpu_tab_put(int kind, uint64_t key, int idx, uint64_t size)
{
	struct vgpu_rec r = {.size = size, .idx = idx, .refs = 1};
	vgpu_tab_add(kind, key, &r);
}

/* The live entry for (kind, key), or NULL; under the lock. */
static struct entry *find(int kind, uint64_t key)
{
	if (!cap)
		return NULL;
	for (size_t j = slot_of(key, kind, cap); tab[j].kind; j = (j + 1) & (cap - 1)) {
		struct entry *e = &tab[j];
		if (!e->gone && e->key == key && e->kind == kind)
			return e;
	}
	return NULL;
}

static void copy_out(const struct entry *e, struct vgpu_rec *rec)
{
	if (rec)
		*rec = (struct vgpu_rec){.size = e->size, .aux = e->aux, .idx = e->idx, .refs = e->refs};
}

int vgpu_tab_get(int kind, uint64_t key, struct vgpu_rec *rec)
{
	lock_tab();
	struct entry *e = find(kind, key);
	if (e)
		copy_out(e, rec);
	unlock_tab();
	return e != NULL;
}

/* Adds delta to the entry's count; at zero the entry goes (rec says refs 0). */
int vgpu_tab_ref(int kind, uint64_t key, int delta, struct vgpu_rec *rec)
{
	lock_tab();
	struct entry *e = find(kind, key);
	if (e) {
		e->refs += delta;
		copy_out(e, rec);
		if (e->refs <= 0)
			e->gone = 1;
	}
	unlock_tab();
	return e != NULL;
}

int vgpu_tab_set_aux(int kind, uint64_t key, uint64_t aux)
{
	lock_tab();
	struct entry *e = find(kind, key);
	if (e)
		e->aux = aux;
	unlock_tab();
	return e != NULL;
}

int vgpu_tab_take(int kind, uint64_t key, int *idx, uint64_t *size)
{
	struct vgpu_rec r;
	if (!vgpu_tab_ref(kind, key, -(1 << 30), &r))
		return 0;
	*idx = r.idx;
	*size = r.size;
	return 1;
}

/* Removes up to max entries of kind with lo <= key < hi (a whole-table walk). */
int vgpu_tab_take_range(int kind, uint64_t lo, uint64_t hi, uint64_t *keys, struct vgpu_rec *recs, int max)
{
	int n = 0;
	lock_tab();
	for (size_t j = 0; j < cap && n < max; j++) {
		struct entry *e = &tab[j];
		if (e->kind != kind || e->gone || e->key < lo || e->key >= hi)
			continue;
		keys[n] = e->key;
		copy_out(e, &recs[n++]);
		e->gone = 1;
	}
	unlock_tab();
	return n;
}

/* In a forked child: the parent's allocations are not ours, and its lock holder is gone. */
void vgpu_tab_reset(void)
{
	if (tab)
		munmap(tab, cap * sizeof(*tab));
	tab = NULL;
	cap = used = 0;
	__atomic_clear(&lock, __ATOMIC_RELEASE);
}
