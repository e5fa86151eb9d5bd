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
	int16_t idx;
	uint8_t kind; /* 0 = empty */
	uint8_t gone; /* tombstone */
	uint32_t pad;
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

void vgpu_tab_put(int kind, uint64_t key, int idx, uint64_t size)
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
	tab[j] = (struct entry){.key = key, .size = size, .idx = (int16_t)idx, .kind = (uint8_t)kind};
	unlock_tab();
}

int vgpu_tab_take(int kind, uint64_t key, int *idx, uint64_t *size)
{
	int found = 0;
	lock_tab();
	if (cap) {
		for (size_t j = slot_of(key, kind, cap); tab[j].kind; j = (j + 1) & (cap - 1)) {
			struct entry *e = &tab[j];
			if (!e->gone && e->key == key && e->kind == kind) {
				*idx = e->idx;
				*size = e->size;
				e->gone = 1;
				found = 1;
				break;
			}
		}
	}
	unlock_tab();
	return found;
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
