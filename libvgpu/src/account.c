/*
 * The container's memory ledger in the shared region. A reservation is one
 * compare-and-swap on the device's usage, so processes of the container never
 * lock each other out; each process also keeps its share in its own slot so
 * that the share of a process that died without freeing (kill -9) can be
 * given back by whoever notices first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vgpu.h"

static int my_slot = -1;
static pid_t my_pid;
static int forked;

/*
 * Fork handlers: glibc registers them with __register_atfork (what its
 * pthread_atfork wrapper calls, exported since 2.3.2), musl exports
 * pthread_atfork itself. Weak, so that one build serves both.
 */
extern int __register_atfork(void (*)(void), void (*)(void), void (*)(void), void *) __attribute__((weak));
extern int pthread_atfork(void (*)(void), void (*)(void), void (*)(void)) __attribute__((weak));
extern void *__dso_handle __attribute__((weak));

static void in_child(void)
{
	forked = 1;
}

/*
 * Start time (clock ticks since boot, field 22 of /proc/<pid>/stat) of pid,
 * and its state letter; 0 if the process does not exist or /proc is absent.
 */
uint64_t vgpu_proc_start_time(pid_t pid, char *state)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* The command name may contain spaces and parentheses: parse after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return 0;
	p += 2;
	if (state)
		*state = *p;
	/* p is at field 3 (state); the start time is field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p, ' ');
		if (!p)
			return 0;
		p++;
	}
	uint64_t v = 0;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	return v;
}

/* A slot is dead when its process is gone, a zombie, or its pid was reused. */
static int slot_dead(const struct vgpu_region_process *s)
{
	char state = 0;
	uint64_t st = vgpu_proc_start_time(s->pid, &state);
	if (st == 0)
		return kill(s->pid, 0) != 0 && errno == ESRCH;
	return st != s->start_time || state == 'Z' || state == 'X';
}

static void release_slot(struct vgpu_region_process *s)
{
	struct vgpu_region *r = vgpu_region;
	for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
		uint64_t u = __atomic_exchange_n(&s->mem_used[d], 0, __ATOMIC_ACQ_REL);
		if (u)
			__atomic_fetch_sub(&r->devices[d].mem_used, u, __ATOMIC_ACQ_REL);
	}
	__atomic_store_n(&s->pid, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&s->state, VGPU_PROC_FREE, __ATOMIC_RELEASE);
}

void vgpu_reclaim_dead(void)
{
	struct vgpu_region *r = vgpu_region;
	for (int i = 0; i < VGPU_MAX_PROCS; i++) {
		struct vgpu_region_process *s = &r->procs[i];
		if (i == my_slot || __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != VGPU_PROC_ACTIVE)
			continue;
		if (!slot_dead(s))
			continue;
		uint32_t active = VGPU_PROC_ACTIVE;
		if (!__atomic_compare_exchange_n(&s->state, &active, VGPU_PROC_RECLAIMING, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			continue; /* someone else is on it */
		vgpu_log(VGPU_LOG_INFO, "reclaiming the memory of dead process %d", s->pid);
		release_slot(s);
	}
}

static int claim_slot(pid_t pid, uint64_t start)
{
	struct vgpu_region *r = vgpu_region;
	for (int i = 0; i < VGPU_MAX_PROCS; i++) {
		struct vgpu_region_process *s = &r->procs[i];
		uint32_t fr = VGPU_PROC_FREE;
		if (!__atomic_compare_exchange_n(&s->state, &fr, VGPU_PROC_RECLAIMING, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			continue;
		s->pid = pid;
		s->start_time = start;
		for (int d = 0; d < VGPU_MAX_DEVICES; d++)
			__atomic_store_n(&s->mem_used[d], 0, __ATOMIC_RELAXED);
		__atomic_store_n(&s->state, VGPU_PROC_ACTIVE, __ATOMIC_RELEASE);
		return i;
	}
	return -1;
}

/* Takes a process slot; also run again in a forked child (new pid). */
void vgpu_proc_attach(void)
{
	static int registered;
	if (!registered) {
		registered = 1;
		if (__register_atfork)
			__register_atfork(NULL, NULL, in_child, __dso_handle);
		else if (pthread_atfork)
			pthread_atfork(NULL, NULL, in_child);
		else
			registered = 0; /* check_fork falls back to comparing pids */
	}
	forked = 0;
	my_pid = getpid();
	uint64_t start = vgpu_proc_start_time(my_pid, NULL);
	vgpu_reclaim_dead();
	my_slot = claim_slot(my_pid, start);
	if (my_slot < 0)
		vgpu_log(VGPU_LOG_WARN, "all %d process slots in use: this process's memory is reclaimed only when freed",
			 VGPU_MAX_PROCS);
}

/*
 * Allocation paths call this; a new pid means we are a forked child, which
 * owns none of its parent's allocations and needs its own slot.
 */
static int atfork_registered(void)
{
	return __register_atfork || pthread_atfork;
}

static void check_fork(void)
{
	if (likely(atfork_registered() ? !forked : getpid() == my_pid))
		return;
	vgpu_tab_reset();
	vgpu_proc_attach();
}

int vgpu_mem_reserve(int idx, uint64_t size)
{
	struct vgpu_region_device *d = &vgpu_region->devices[idx];
	uint64_t limit = vgpu_cfg.mem_limit[idx]; /* never the region's copy: docs/contract.md */

	check_fork();
	for (int attempt = 0; attempt < 2; attempt++) {
		uint64_t u = __atomic_load_n(&d->mem_used, __ATOMIC_RELAXED);
		for (;;) {
			if (limit && (size > limit || u > limit - size))
				break;
			if (__atomic_compare_exchange_n(&d->mem_used, &u, u + size, 1, __ATOMIC_ACQ_REL,
							__ATOMIC_RELAXED)) {
				uint64_t peak = __atomic_load_n(&d->mem_peak, __ATOMIC_RELAXED);
				while (u + size > peak &&
				       !__atomic_compare_exchange_n(&d->mem_peak, &peak, u + size, 1, __ATOMIC_RELAXED,
								    __ATOMIC_RELAXED))
					;
				if (my_slot >= 0)
					__atomic_fetch_add(&vgpu_region->procs[my_slot].mem_used[idx], size,
							   __ATOMIC_RELAXED);
				return 0;
			}
		}
		if (attempt == 0)
			vgpu_reclaim_dead();
	}
	__atomic_fetch_add(&d->alloc_failures, 1, __ATOMIC_RELAXED);
	vgpu_log(VGPU_LOG_INFO, "device %d: %llu bytes refused, %llu of %llu in use", idx, (unsigned long long)size,
		 (unsigned long long)__atomic_load_n(&d->mem_used, __ATOMIC_RELAXED), (unsigned long long)limit);
	return -1;
}

void vgpu_mem_release(int idx, uint64_t size)
{
	check_fork();
	__atomic_fetch_sub(&vgpu_region->devices[idx].mem_used, size, __ATOMIC_ACQ_REL);
	if (my_slot >= 0)
		__atomic_fetch_sub(&vgpu_region->procs[my_slot].mem_used[idx], size, __ATOMIC_RELAXED);
}

/* A process that exits normally gives its share back at once. */
__attribute__((destructor)) static void vgpu_proc_detach(void)
{
	if (vgpu_region && my_slot >= 0 && getpid() == my_pid) {
		release_slot(&vgpu_region->procs[my_slot]);
		my_slot = -1;
	}
}
