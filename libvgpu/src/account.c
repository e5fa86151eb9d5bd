/*
 * The container's memory ledger in the shared region (docs/shared-region.md).
 * A reservation is one compare-and-swap on the device's usage, so processes
 * of the container never lock each other out; each process also keeps its
 * share in its own slot so that the share of a process that died without
 * freeing (kill -9) can be given back by whoever notices first.
 *
 * Liveness without a thread: every process holds a POSIX read lock on one
 * byte of the region file per slot (far past its end). The kernel drops it
 * when the process dies or execs (the descriptor is close-on-exec), so "is
 * slot i alive" is one F_GETLK instead of reading /proc. A process scans
 * from a refused allocation or cuMemGetInfo, at most every RECLAIM_EVERY_NS,
 * so a refusal stays cheap and a dead process's memory is back within that
 * period for any neighbour that looks.
 *
 * Deaths are noticed without any scan through a SysV semaphore each slotted
 * process raises by one with SEM_UNDO: the kernel lowers it when the process
 * dies, so a value below header.attached means someone died unannounced, and
 * one semctl tells a refusal or cuMemGetInfo whether a scan is worth it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vgpu.h"

#define RECLAIM_EVERY_NS 100000000ull
/* Lock bytes: slot i at LOCK_BASE + i; processes without a slot share LOCK_UNSLOTTED. */
#define LOCK_BASE (1ll << 40)
#define LOCK_UNSLOTTED (LOCK_BASE - 1)

static int my_slot = -1;
static pid_t my_pid;
static uint64_t my_start;
static int forked;
static int lock_fd = -1;
static uint64_t region_ino;                       /* to recognise the region in /proc/<pid>/maps */
static int unslotted;                             /* this process found no slot */
static uint64_t unslotted_mine[VGPU_MAX_DEVICES]; /* its bytes in devices[].mem_unslotted */
static uint16_t held[VGPU_MAX_SHARED];            /* this process's holds on shared[] entries */
static char held_lock;                            /* threads importing or dropping at once */
static int sem_id = -1;                           /* the container's live-process semaphore */
static int counted;                               /* this image raised it (and header.attached) */

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

static int lock_byte(long long off, short type)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
	return lock_fd >= 0 ? fcntl(lock_fd, F_SETLK, &fl) : -1;
}

/* 1: another process holds the byte, 0: nobody does, -1: cannot tell. */
static int byte_held(long long off)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
	if (lock_fd < 0 || fcntl(lock_fd, F_GETLK, &fl) != 0)
		return -1;
	return fl.l_type != F_UNLCK;
}

/*
 * Whether pid maps the region file (every process with a slot does, until it
 * execs): 1, 0, or -1 when /proc does not say. Matches the inode column.
 */
static int maps_region(pid_t pid)
{
	char path[64], buf[4096];
	size_t have = 0;
	int found = 0;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || !region_ino) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = 0;
		char *line = buf, *nl;
		while (!found && (nl = strchr(line, '\n'))) {
			/* address perms offset dev inode path */
			char *p = line;
			for (int field = 0; field < 4 && p < nl; field++) {
				p = memchr(p, ' ', (size_t)(nl - p));
				p = p ? p + 1 : nl;
			}
			uint64_t ino = 0;
			while (p < nl && *p >= '0' && *p <= '9')
				ino = ino * 10 + (uint64_t)(*p++ - '0');
			found = ino == region_ino;
			line = nl + 1;
		}
		if (found)
			break;
		have = (size_t)(buf + have - line);
		memmove(buf, line, have);
		if (have == sizeof(buf) - 1)
			have = 0; /* a line longer than the buffer: skip it */
	}
	close(fd);
	return found;
}

/*
 * A slot is dead when its process is gone, a zombie, or its pid was reused.
 * A held lock proves it alive; a free one usually means dead, but a process
 * that closed every descriptor has lost its lock too, so ask /proc then: the
 * same pid and start time that no longer maps the region has exec'd into a
 * program without libvgpu, whose old image's memory is gone.
 */
static int slot_dead(int i, const struct vgpu_region_process *s)
{
	if (byte_held(LOCK_BASE + i) == 1)
		return 0;
	char state = 0;
	uint64_t st = vgpu_proc_start_time(s->pid, &state);
	if (st == 0)
		return kill(s->pid, 0) != 0 && errno == ESRCH;
	if (st != s->start_time || state == 'Z' || state == 'X')
		return 1;
	return maps_region(s->pid) == 0;
}

static void free_shared(struct vgpu_region_shared *e)
{
	struct vgpu_region_device *d = &vgpu_region->devices[e->device % VGPU_MAX_DEVICES];
	__atomic_fetch_sub(&d->mem_used, e->size, __ATOMIC_ACQ_REL);
	__atomic_fetch_sub(&d->mem_shared, e->size, __ATOMIC_RELAXED);
	__atomic_store_n(&e->key, 0, __ATOMIC_RELEASE);
}

/* Slot `slot` (or a process without one, -1) stops holding entry e; the last holder frees it. */
static void shared_let_go(int e, int slot)
{
	struct vgpu_region_shared *s = &vgpu_region->shared[e];
	if (slot >= 0) {
		uint64_t bit = 1ull << (slot % 64);
		if (!(__atomic_fetch_and(&s->slots[slot / 64], ~bit, __ATOMIC_ACQ_REL) & bit))
			return; /* already let go (reclaimed) */
	}
	if (__atomic_sub_fetch(&s->holders, 1, __ATOMIC_ACQ_REL) == 0)
		free_shared(s);
}

/*
 * The semaphore, created by the first process that needs it (IPC_PRIVATE:
 * its id travels in the region). System calls, not the C library's
 * wrappers, whose symbol versions vary (test/check_symbols.sh).
 */
static void sem_attach(void)
{
	struct vgpu_region_header *h = &vgpu_region->header;
	int32_t v = __atomic_load_n(&h->live_sem, __ATOMIC_ACQUIRE);
	if (v == 0 && lock_fd >= 0) {
		int id = (int)syscall(SYS_semget, IPC_PRIVATE, 1, IPC_CREAT | 0666);
		int32_t none = 0;
		if (id >= 0 && !__atomic_compare_exchange_n(&h->live_sem, &none, id + 1, 0, __ATOMIC_ACQ_REL,
							    __ATOMIC_ACQUIRE)) {
			syscall(SYS_semctl, id, 0, IPC_RMID, 0);
			id = none - 1;
		}
		v = id + 1;
	}
	sem_id = v > 0 ? v - 1 : -1;
}

static int sem_add(int delta)
{
	struct sembuf op = {.sem_num = 0, .sem_op = (short)delta, .sem_flg = SEM_UNDO | IPC_NOWAIT};
	return sem_id >= 0 && syscall(SYS_semop, sem_id, &op, 1) == 0;
}

/* 1: a counted process died and was not reclaimed yet; 0: none; -1: cannot tell. */
static int death_suspected(void)
{
	if (sem_id < 0)
		return -1;
	long v = syscall(SYS_semctl, sem_id, 0, GETVAL, 0);
	if (v < 0)
		return -1;
	return (uint64_t)v < __atomic_load_n(&vgpu_region->header.attached, __ATOMIC_ACQUIRE);
}

/*
 * The last process out removes the semaphore (it would outlive the container
 * in a shared IPC namespace). One that raced in after the check finds it gone
 * (EINVAL) and runs uncounted, on the periodic scan.
 */
static void sem_retire_if_idle(void)
{
	struct vgpu_region_header *h = &vgpu_region->header;
	if (sem_id < 0 || __atomic_load_n(&h->attached, __ATOMIC_ACQUIRE) != 0 ||
	    syscall(SYS_semctl, sem_id, 0, GETVAL, 0) != 0)
		return;
	int32_t v = sem_id + 1;
	if (__atomic_compare_exchange_n(&h->live_sem, &v, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		syscall(SYS_semctl, sem_id, 0, IPC_RMID, 0);
	sem_id = -1;
}

static void release_slot(int i, uint32_t state)
{
	struct vgpu_region *r = vgpu_region;
	struct vgpu_region_process *s = &r->procs[i];
	for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
		uint64_t u = __atomic_exchange_n(&s->mem_used[d], 0, __ATOMIC_ACQ_REL);
		if (u)
			__atomic_fetch_sub(&r->devices[d].mem_used, u, __ATOMIC_ACQ_REL);
	}
	for (int e = 0; e < VGPU_MAX_SHARED; e++)
		if (__atomic_load_n(&r->shared[e].slots[i / 64], __ATOMIC_ACQUIRE) & (1ull << (i % 64)))
			shared_let_go(e, i);
	__atomic_store_n(&s->pid, 0, __ATOMIC_RELAXED);
	if (state & VGPU_PROC_COUNTED)
		__atomic_fetch_sub(&r->header.attached, 1, __ATOMIC_ACQ_REL);
	__atomic_store_n(&s->state, VGPU_PROC_FREE, __ATOMIC_RELEASE);
}

static int slot_active(uint32_t state)
{
	return (state & 0xff) == VGPU_PROC_ACTIVE;
}

/* Claims an active slot for release; returns its state (0 when not ours to release). */
static uint32_t take_for_release(struct vgpu_region_process *s)
{
	uint32_t st = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
	if (!slot_active(st) ||
	    !__atomic_compare_exchange_n(&s->state, &st, VGPU_PROC_RECLAIMING, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return 0;
	return st;
}

/*
 * Memory booked by processes without a slot is given back once none of them
 * is alive (nobody holds LOCK_UNSLOTTED). header.unslotted, bumped by each
 * such process before it books anything, tells a newcomer from the dead.
 */
static void reclaim_unslotted(void)
{
	struct vgpu_region *r = vgpu_region;
	if (unslotted)
		return; /* our own lock would not show in F_GETLK */
	uint32_t gen = __atomic_load_n(&r->header.unslotted, __ATOMIC_ACQUIRE);
	int any = 0;
	for (int d = 0; d < VGPU_MAX_DEVICES; d++)
		any |= __atomic_load_n(&r->devices[d].mem_unslotted, __ATOMIC_RELAXED) != 0;
	if (!any || byte_held(LOCK_UNSLOTTED) != 0)
		return;
	for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
		uint64_t u = __atomic_exchange_n(&r->devices[d].mem_unslotted, 0, __ATOMIC_ACQ_REL);
		if (!u)
			continue;
		if (__atomic_load_n(&r->header.unslotted, __ATOMIC_ACQUIRE) != gen)
			__atomic_fetch_add(&r->devices[d].mem_unslotted, u, __ATOMIC_ACQ_REL);
		else
			__atomic_fetch_sub(&r->devices[d].mem_used, u, __ATOMIC_ACQ_REL);
	}
}

int vgpu_reclaim_dead(void)
{
	struct vgpu_region *r = vgpu_region;
	int released = 0;
	for (int i = 0; i < VGPU_MAX_PROCS; i++) {
		struct vgpu_region_process *s = &r->procs[i];
		uint32_t st;
		if (i == my_slot || !slot_active(__atomic_load_n(&s->state, __ATOMIC_ACQUIRE)))
			continue;
		if (!slot_dead(i, s) || !(st = take_for_release(s)))
			continue; /* alive, or someone else is on it */
		vgpu_log(VGPU_LOG_INFO, "reclaiming the memory of dead process %d", s->pid);
		release_slot(i, st);
		released++;
	}
	reclaim_unslotted();
	if (released && my_slot < 0 && !unslotted)
		sem_retire_if_idle();
	return released;
}

/*
 * The scan from a refusal: always for the first refusal since this process
 * last got memory (a neighbour may just have died: free it before saying
 * no), then at most once per RECLAIM_EVERY_NS while refusals go on, so a
 * process retrying in a loop stays cheap. cuMemGetInfo and attach use the
 * same period.
 */
static uint64_t next_scan_ns;
static int refused_since_grant;

/*
 * A forced scan that found nobody dead was a false alarm (the semaphore
 * lowered by someone else): then no forced scan for QUIET_NS, so a tampered
 * semaphore cannot make every refusal scan.
 */
#define QUIET_NS 5000000ull
static uint64_t quiet_until_ns;

static void scan_unless_recent(int force)
{
	uint64_t now = vgpu_now_ns();
	if (now < __atomic_load_n(&next_scan_ns, __ATOMIC_RELAXED) &&
	    (!force || now < __atomic_load_n(&quiet_until_ns, __ATOMIC_RELAXED)))
		return;
	__atomic_store_n(&next_scan_ns, now + RECLAIM_EVERY_NS, __ATOMIC_RELAXED);
	if (!vgpu_reclaim_dead() && force)
		__atomic_store_n(&quiet_until_ns, now + QUIET_NS, __ATOMIC_RELAXED);
}

void vgpu_reclaim_maybe(void)
{
	scan_unless_recent(death_suspected() == 1);
}

/* Without the semaphore, the first refusal since a grant scans: a neighbour may just have died. */
static void reclaim_on_refusal(void)
{
	int d = death_suspected();
	int first = !__atomic_exchange_n(&refused_since_grant, 1, __ATOMIC_RELAXED);
	scan_unless_recent(d == 1 || (d < 0 && first));
}

static int claim_slot(void)
{
	struct vgpu_region *r = vgpu_region;
	for (int i = 0; i < VGPU_MAX_PROCS; i++) {
		struct vgpu_region_process *s = &r->procs[i];
		uint32_t fr = VGPU_PROC_FREE;
		if (__atomic_load_n(&s->state, __ATOMIC_RELAXED) != VGPU_PROC_FREE ||
		    !__atomic_compare_exchange_n(&s->state, &fr, VGPU_PROC_RECLAIMING, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			continue;
		lock_byte(LOCK_BASE + i, F_RDLCK);
		s->pid = my_pid;
		s->start_time = my_start;
		for (int d = 0; d < VGPU_MAX_DEVICES; d++)
			__atomic_store_n(&s->mem_used[d], 0, __ATOMIC_RELAXED);
		/* Raised before attached: a value below attached always means a death. */
		counted = sem_add(1);
		if (counted)
			__atomic_fetch_add(&r->header.attached, 1, __ATOMIC_ACQ_REL);
		__atomic_store_n(&s->state, VGPU_PROC_ACTIVE | (counted ? VGPU_PROC_COUNTED : 0), __ATOMIC_RELEASE);
		return i;
	}
	return -1;
}

/* No slot: still counted for the container (devices[].mem_unslotted), and said once. */
static void go_unslotted(void)
{
	unslotted = 1;
	lock_byte(LOCK_UNSLOTTED, F_RDLCK); /* before the count: see reclaim_unslotted */
	__atomic_fetch_add(&vgpu_region->header.unslotted, 1, __ATOMIC_ACQ_REL);
	vgpu_log(VGPU_LOG_ERROR,
		 "no process slot left in the shared region (%d in use): this process's GPU memory counts against the "
		 "container's limit but is not listed per process, and is given back only when no process without a "
		 "slot is left",
		 VGPU_MAX_PROCS);
}

/* A slot freed up since: move what we booked without one into it. */
static void retry_slot(void)
{
	int i = claim_slot();
	if (i < 0)
		return;
	struct vgpu_region *r = vgpu_region;
	for (int d = 0; d < VGPU_MAX_DEVICES; d++) {
		uint64_t u = __atomic_exchange_n(&unslotted_mine[d], 0, __ATOMIC_RELAXED);
		if (!u)
			continue;
		__atomic_fetch_add(&r->procs[i].mem_used[d], u, __ATOMIC_RELAXED);
		__atomic_fetch_sub(&r->devices[d].mem_unslotted, u, __ATOMIC_ACQ_REL);
	}
	my_slot = i;
	unslotted = 0;
	lock_byte(LOCK_UNSLOTTED, F_UNLCK);
}

/*
 * Takes a process slot; also run again in a forked child (new pid, the
 * descriptor inherited). path: the shared region's file, NULL when the
 * region is this process's own.
 */
void vgpu_proc_attach(const char *path)
{
	static int registered;
	struct vgpu_region *r = vgpu_region;
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
	my_slot = -1;
	unslotted = 0;
	memset(unslotted_mine, 0, sizeof(unslotted_mine));
	memset(held, 0, sizeof(held));
	__atomic_clear(&held_lock, __ATOMIC_RELEASE); /* a thread of the parent may have held it */
	my_pid = getpid();
	my_start = vgpu_proc_start_time(my_pid, NULL);
	if (lock_fd < 0 && path && *path) {
		struct stat st;
		lock_fd = open(path, O_RDWR | O_CLOEXEC);
		/* The system call: glibc's fstat symbol is versioned 2.33 (test/check_symbols.sh). */
		if (lock_fd >= 0 && syscall(SYS_fstat, lock_fd, &st) == 0)
			region_ino = (uint64_t)st.st_ino;
	}
	counted = 0;
	sem_attach();
	/*
	 * exec keeps the pid and the start time: a slot that carries both is this
	 * process's previous image, whose GPU memory went away with it.
	 */
	for (int i = 0; i < VGPU_MAX_PROCS; i++) {
		struct vgpu_region_process *s = &r->procs[i];
		uint32_t st;
		if (!slot_active(__atomic_load_n(&s->state, __ATOMIC_ACQUIRE)) || s->pid != my_pid ||
		    s->start_time != my_start || !(st = take_for_release(s)))
			continue;
		release_slot(i, st);
		if (st & VGPU_PROC_COUNTED)
			sem_add(-1); /* the old image's raise survives exec (semadj): drop it */
	}
	vgpu_reclaim_maybe(); /* the monitor's view too: a newcomer tidies up */
	if (sem_id < 0)
		sem_attach(); /* the scan may have retired it with the last dead process */
	my_slot = claim_slot();
	if (my_slot < 0) {
		vgpu_reclaim_dead();
		my_slot = claim_slot();
	}
	if (my_slot < 0)
		go_unslotted();
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
	vgpu_proc_attach(NULL);
}

static void book(int idx, uint64_t size)
{
	if (likely(my_slot >= 0)) {
		__atomic_fetch_add(&vgpu_region->procs[my_slot].mem_used[idx], size, __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&vgpu_region->devices[idx].mem_unslotted, size, __ATOMIC_RELAXED);
		__atomic_fetch_add(&unslotted_mine[idx], size, __ATOMIC_RELAXED);
	}
}

static void unbook(int idx, uint64_t size)
{
	if (likely(my_slot >= 0)) {
		__atomic_fetch_sub(&vgpu_region->procs[my_slot].mem_used[idx], size, __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_sub(&vgpu_region->devices[idx].mem_unslotted, size, __ATOMIC_RELAXED);
		__atomic_fetch_sub(&unslotted_mine[idx], size, __ATOMIC_RELAXED);
	}
}

int vgpu_mem_reserve(int idx, uint64_t size)
{
	struct vgpu_region_device *d = &vgpu_region->devices[idx];
	uint64_t limit = vgpu_cfg.mem_limit[idx]; /* never the region's copy: docs/contract.md */

	check_fork();
	if (unlikely(unslotted))
		retry_slot();
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
				book(idx, size);
				if (unlikely(refused_since_grant))
					__atomic_store_n(&refused_since_grant, 0, __ATOMIC_RELAXED);
				return 0;
			}
		}
		if (attempt == 0)
			reclaim_on_refusal();
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
	unbook(idx, size);
}

static void lock_held(void)
{
	while (__atomic_test_and_set(&held_lock, __ATOMIC_ACQUIRE))
		;
}

static void unlock_held(void)
{
	__atomic_clear(&held_lock, __ATOMIC_RELEASE);
}

/*
 * Exported VMM memory (cuMemExportToShareableHandle) moves from this
 * process's booking to a container-wide entry keyed by the shareable handle,
 * so that it stays counted, once, while any process holds it. Returns the
 * entry, or -1 (table full: it stays this process's).
 */
int vgpu_shared_publish(int idx, uint64_t size, uint64_t key)
{
	struct vgpu_region *r = vgpu_region;
	check_fork();
	for (int e = 0; e < VGPU_MAX_SHARED; e++)
		if (__atomic_load_n(&r->shared[e].key, __ATOMIC_ACQUIRE) == key)
			vgpu_log(VGPU_LOG_INFO, "two exported allocations share one handle identity: importers hold both");
	for (int e = 0; e < VGPU_MAX_SHARED; e++) {
		struct vgpu_region_shared *s = &r->shared[e];
		uint64_t free_key = 0;
		if (__atomic_load_n(&s->key, __ATOMIC_RELAXED) ||
		    !__atomic_compare_exchange_n(&s->key, &free_key, ~0ull, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue;
		s->size = size;
		s->device = (uint32_t)idx;
		s->seq = __atomic_add_fetch(&r->header.shared_seq, 1, __ATOMIC_ACQ_REL);
		memset(s->slots, 0, sizeof(s->slots));
		if (my_slot >= 0)
			s->slots[my_slot / 64] = 1ull << (my_slot % 64);
		__atomic_store_n(&s->holders, 1, __ATOMIC_RELEASE);
		__atomic_fetch_add(&r->devices[idx].mem_shared, size, __ATOMIC_RELAXED);
		unbook(idx, size);
		lock_held();
		held[e] = 1;
		unlock_held();
		__atomic_store_n(&s->key, key, __ATOMIC_RELEASE);
		return e;
	}
	vgpu_log(VGPU_LOG_ERROR, "all %d shared-allocation entries in use: exported GPU memory is counted only while "
		 "its exporter holds it", VGPU_MAX_SHARED);
	return -1;
}

/*
 * An import: hold every entry exported under key so far (*upto: the newest
 * one's seq), so that dropping it later lets go of exactly those, even when
 * the key cannot tell several exported allocations apart. Returns how many.
 */
int vgpu_shared_hold(uint64_t key, uint32_t *upto)
{
	struct vgpu_region *r = vgpu_region;
	int n = 0;
	check_fork();
	*upto = __atomic_load_n(&r->header.shared_seq, __ATOMIC_ACQUIRE);
	lock_held();
	for (int e = 0; e < VGPU_MAX_SHARED; e++) {
		struct vgpu_region_shared *s = &r->shared[e];
		if (__atomic_load_n(&s->key, __ATOMIC_ACQUIRE) != key || s->seq > *upto)
			continue;
		if (held[e]) {
			held[e]++;
			n++;
			continue;
		}
		uint32_t h = __atomic_load_n(&s->holders, __ATOMIC_ACQUIRE);
		do {
			if (h == 0)
				break; /* being freed */
		} while (!__atomic_compare_exchange_n(&s->holders, &h, h + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
		if (h == 0)
			continue;
		if (my_slot >= 0)
			__atomic_fetch_or(&s->slots[my_slot / 64], 1ull << (my_slot % 64), __ATOMIC_ACQ_REL);
		held[e] = 1;
		n++;
	}
	unlock_held();
	return n;
}

/*
 * This process drops one hold: on entry e (an exporter, e >= 0), or on the
 * entries an import of key held (e < 0: those of key with seq <= upto).
 */
void vgpu_shared_drop(int e, uint64_t key, uint32_t upto)
{
	check_fork();
	lock_held();
	for (int i = e < 0 ? 0 : e; i < (e < 0 ? VGPU_MAX_SHARED : e + 1); i++) {
		struct vgpu_region_shared *s = &vgpu_region->shared[i];
		if (!held[i] || (e < 0 && (__atomic_load_n(&s->key, __ATOMIC_ACQUIRE) != key || s->seq > upto)))
			continue;
		if (--held[i] == 0)
			shared_let_go(i, my_slot);
	}
	unlock_held();
}

/* A process that exits normally gives its share back at once. */
__attribute__((destructor)) static void vgpu_proc_detach(void)
{
	if (!vgpu_region || getpid() != my_pid)
		return;
	if (my_slot >= 0) {
		/* Lowered before attached: never a false "alive". */
		if (counted)
			sem_add(-1);
		release_slot(my_slot, VGPU_PROC_ACTIVE | (counted ? VGPU_PROC_COUNTED : 0));
		my_slot = -1;
		sem_retire_if_idle();
	} else if (unslotted) {
		for (int d = 0; d < VGPU_MAX_DEVICES; d++)
			if (unslotted_mine[d])
				vgpu_mem_release(d, unslotted_mine[d]);
		for (int e = 0; e < VGPU_MAX_SHARED; e++)
			if (held[e])
				shared_let_go(e, -1);
	}
}
