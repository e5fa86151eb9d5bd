/*
 * Configuration from the container contract and the attached shared region.
 * Everything here runs once, at the first CUDA or NVML call of a process,
 * never in a constructor: processes that never touch the GPU are unaffected.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vgpu.h"

struct vgpu_config vgpu_cfg;
struct vgpu_region *vgpu_region;
volatile int vgpu_cu_flag;
volatile int vgpu_nv_flag;

static int init_state;
static int region_shared;
static int complained;
static int ord_map[64]; /* CUDA ordinal -> device index + 2; 0 = not resolved yet */

uint64_t vgpu_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int pending_reason;
static char pending_text[VGPU_REASON_LEN];

static void mark_region(int reason, const char *text)
{
	struct vgpu_region_header *h = &vgpu_region->header;
	uint32_t none = VGPU_REASON_NONE;
	if (__atomic_compare_exchange_n(&h->reason, &none, (uint32_t)reason, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		memcpy(h->reason_text, text, VGPU_REASON_LEN);
	__atomic_fetch_or(&h->flags, VGPU_FLAG_UNENFORCED, __ATOMIC_RELEASE);
}

/*
 * The one line a user sees when limits cannot be enforced. The first cause is
 * printed, whatever the log level, and recorded in the region for the monitor.
 */
void vgpu_unenforced(int reason, const char *fmt, ...)
{
	char text[VGPU_REASON_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (reason != VGPU_REASON_NONE) {
		if (vgpu_region && region_shared)
			mark_region(reason, text);
		else if (!pending_reason) {
			/* Found before the region is attached (bad env): mark it once attached. */
			pending_reason = reason;
			memcpy(pending_text, text, sizeof(text));
		}
	}
	if (__atomic_exchange_n(&complained, 1, __ATOMIC_ACQ_REL))
		return;
	char line[VGPU_REASON_LEN + 96];
	int n = snprintf(line, sizeof(line), "vgpu: %s: %s\n",
			 reason == VGPU_REASON_NONE ? "GPU limits hold per process only, not for the whole container"
						    : "GPU limits are NOT enforced in this container",
			 text);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	if (write(2, line, (size_t)n) < 0)
		return;
}

/* Splits a comma list in place; returns the number of fields. */
static int split(char *s, char **out, int max)
{
	int n = 0;
	if (!s || !*s)
		return 0;
	for (;;) {
		if (n == max)
			return -1;
		out[n++] = s;
		char *c = strchr(s, ',');
		if (!c)
			return n;
		*c = 0;
		s = c + 1;
	}
}

static int parse_u64(const char *s, uint64_t max, uint64_t *v)
{
	char *end;
	if (!*s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || *end || x > max)
		return -1;
	*v = x;
	return 0;
}

static char env_copy[3][1024];

static const char *env_dup(int slot, const char *name)
{
	const char *v = getenv(name);
	if (!v)
		return NULL;
	snprintf(env_copy[slot], sizeof(env_copy[slot]), "%s", v);
	return env_copy[slot];
}

/* Returns 0, or -1 after reporting a malformed variable. */
static int parse_env(void)
{
	char *devs[VGPU_MAX_DEVICES], *mems[VGPU_MAX_DEVICES], *cores[VGPU_MAX_DEVICES];
	const char *vis = env_dup(0, "NVIDIA_VISIBLE_DEVICES");
	const char *mem = env_dup(1, "VGPU_MEMORY_LIMITS_MIB");
	const char *core = env_dup(2, "VGPU_CORE_LIMITS");
	int nd = 0, nm, nc;

	vgpu_cfg.log_level = vgpu_parse_log_level(getenv("VGPU_LOG_LEVEL"));
	if ((!mem || !*mem) && (!core || !*core))
		return 0; /* nothing to enforce: pass everything through */
	nm = split((char *)mem, mems, VGPU_MAX_DEVICES);
	nc = split((char *)core, cores, VGPU_MAX_DEVICES);
	if (vis && strcmp(vis, "all") && strcmp(vis, "none") && strcmp(vis, "void"))
		nd = split((char *)vis, devs, VGPU_MAX_DEVICES);
	if (nm < 0 || nc < 0 || nd < 0) {
		vgpu_unenforced(VGPU_REASON_BAD_ENV, "more than %d devices in the environment", VGPU_MAX_DEVICES);
		return -1;
	}
	int n = nm > nc ? nm : nc;
	if ((nm && nc && nm != nc) || (nd && nd != n)) {
		vgpu_unenforced(VGPU_REASON_BAD_ENV,
				"NVIDIA_VISIBLE_DEVICES, VGPU_MEMORY_LIMITS_MIB and VGPU_CORE_LIMITS list different numbers of devices");
		return -1;
	}
	for (int i = 0; i < n; i++) {
		uint64_t v;
		if (nm) {
			if (parse_u64(mems[i], 1ull << 30, &v)) {
				vgpu_unenforced(VGPU_REASON_BAD_ENV, "VGPU_MEMORY_LIMITS_MIB: \"%s\" is not a size in MiB",
						mems[i]);
				return -1;
			}
			vgpu_cfg.mem_limit[i] = v << 20;
		}
		if (nc) {
			if (parse_u64(cores[i], 100, &v)) {
				vgpu_unenforced(VGPU_REASON_BAD_ENV, "VGPU_CORE_LIMITS: \"%s\" is not 0-100", cores[i]);
				return -1;
			}
			vgpu_cfg.core_limit[i] = (uint32_t)v;
		}
		if (nd) {
			snprintf(vgpu_cfg.uuid[i], VGPU_UUID_LEN, "%s", devs[i]);
			if (!strncmp(devs[i], "GPU-", 4))
				vgpu_cfg.by_uuid = 1;
		}
	}
	vgpu_cfg.ndev = n;
	vgpu_cfg.active = 1;
	return 0;
}

static struct vgpu_region *private_region(void)
{
	void *p = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void fill_devices(struct vgpu_region *r)
{
	for (int i = 0; i < vgpu_cfg.ndev; i++) {
		struct vgpu_region_device *d = &r->devices[i];
		memcpy(d->uuid, vgpu_cfg.uuid[i], VGPU_UUID_LEN);
		__atomic_store_n(&d->mem_limit, vgpu_cfg.mem_limit[i], __ATOMIC_RELAXED);
		__atomic_store_n(&d->core_limit, vgpu_cfg.core_limit[i], __ATOMIC_RELAXED);
	}
	__atomic_store_n(&r->header.device_count, (uint32_t)vgpu_cfg.ndev, __ATOMIC_RELEASE);
}

static void init_header(struct vgpu_region *r)
{
	struct vgpu_region_header *h = &r->header;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	h->version = VGPU_REGION_VERSION;
	h->size = sizeof(struct vgpu_region);
	h->header_size = sizeof(struct vgpu_region_header);
	h->device_size = sizeof(struct vgpu_region_device);
	h->process_size = sizeof(struct vgpu_region_process);
	h->process_capacity = VGPU_MAX_PROCS;
	h->shared_capacity = VGPU_MAX_SHARED;
	h->created_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int region_ok(const struct vgpu_region *r)
{
	const struct vgpu_region_header *h = &r->header;
	return h->magic == VGPU_REGION_MAGIC && h->version == VGPU_REGION_VERSION &&
	       h->size == sizeof(struct vgpu_region) && h->process_capacity == VGPU_MAX_PROCS;
}

/* Maps $VGPU_REGION, creating and initialising it under an flock if empty. */
static struct vgpu_region *attach_region(const char *path, const char **why)
{
	struct vgpu_region *r = NULL;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0) {
		*why = strerror(errno);
		return NULL;
	}
	if (flock(fd, LOCK_EX) == 0) {
		off_t size = lseek(fd, 0, SEEK_END);
		if (size == 0) {
			/* Every process of the container, whatever its uid, must open it. */
			if (fchmod(fd, 0666) || ftruncate(fd, sizeof(struct vgpu_region)))
				size = -1;
		} else if (size != (off_t)sizeof(struct vgpu_region)) {
			*why = "size does not match this libvgpu (another version created it)";
			size = -2;
		}
		if (size >= 0) {
			void *p = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (p != MAP_FAILED) {
				r = p;
				if (size == 0) {
					init_header(r);
					fill_devices(r);
					__atomic_store_n(&r->header.magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
				} else if (!region_ok(r)) {
					*why = "magic or version does not match this libvgpu";
					munmap(p, sizeof(struct vgpu_region));
					r = NULL;
				} else {
					fill_devices(r);
				}
			} else {
				*why = strerror(errno);
			}
		} else if (size == -1) {
			*why = strerror(errno);
		}
		flock(fd, LOCK_UN);
	} else {
		*why = strerror(errno);
	}
	close(fd);
	return r;
}

static void common_init(void)
{
	int expect = 0;
	if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2)
		return;
	if (!__atomic_compare_exchange_n(&init_state, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)
			sched_yield();
		return;
	}
	if (parse_env() != 0) {
		/* Nothing to enforce with, but let the monitor see why. */
		const char *path = getenv("VGPU_REGION"), *why;
		vgpu_cfg.ndev = 0;
		if (path && *path && (vgpu_region = attach_region(path, &why))) {
			region_shared = 1;
			mark_region(pending_reason, pending_text);
		}
		vgpu_cfg.active = 0;
	} else if (vgpu_cfg.active) {
		const char *path = getenv("VGPU_REGION");
		const char *why = "VGPU_REGION is not set";
		if (path && *path)
			vgpu_region = attach_region(path, &why);
		if (vgpu_region) {
			region_shared = 1;
		} else {
			/* Still enforce within this process, but say it is not the container's limit. */
			vgpu_region = private_region();
			if (vgpu_region) {
				init_header(vgpu_region);
				fill_devices(vgpu_region);
			}
			vgpu_unenforced(VGPU_REASON_NONE, "shared region \"%s\": %s", path ? path : "", why);
		}
		if (vgpu_region)
			vgpu_proc_attach();
		else
			vgpu_cfg.active = 0;
	}
	__atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
}

static int throttled(void)
{
	if (!vgpu_cfg.active || !region_shared)
		return 0;
	for (int i = 0; i < vgpu_cfg.ndev; i++)
		if (vgpu_cfg.core_limit[i] > 0 && vgpu_cfg.core_limit[i] < 100)
			return 1;
	return 0;
}

void vgpu_cu_init(void)
{
	common_init();
	vgpu_cuda_table_init();
	__atomic_store_n(&vgpu_cu_flag, throttled() ? 2 : 1, __ATOMIC_RELEASE);
}

void vgpu_nv_init(void)
{
	common_init();
	vgpu_nvml_table_init();
	__atomic_store_n(&vgpu_nv_flag, 1, __ATOMIC_RELEASE);
}

static void format_uuid(const CUuuid *u, char *out)
{
	const unsigned char *b = (const unsigned char *)u->bytes;
	snprintf(out, VGPU_UUID_LEN, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/*
 * The device index (position in NVIDIA_VISIBLE_DEVICES) of a CUDA ordinal, or
 * -1 when the device is not limited. Ordinals are matched by uuid when the
 * env names uuids, since CUDA may order devices differently from the list.
 */
int vgpu_device_index(CUdevice ord)
{
	if (!vgpu_cfg.active || ord < 0)
		return -1;
	if (ord < 64) {
		int m = __atomic_load_n(&ord_map[ord], __ATOMIC_RELAXED);
		if (m)
			return m - 2;
	}
	int idx = -1;
	if (vgpu_cfg.by_uuid && HELPER(cuDeviceGetUuid)) {
		CUuuid u;
		char s[VGPU_UUID_LEN];
		if (((CUresult(*)(CUuuid *, CUdevice))HELPER(cuDeviceGetUuid))(&u, ord) != CUDA_SUCCESS)
			return ord < vgpu_cfg.ndev ? ord : -1; /* before cuInit: do not cache */
		format_uuid(&u, s);
		for (int i = 0; i < vgpu_cfg.ndev; i++)
			if (!strcmp(s, vgpu_cfg.uuid[i]))
				idx = i;
	} else if (ord < vgpu_cfg.ndev) {
		idx = ord;
	}
	if (ord < 64)
		__atomic_store_n(&ord_map[ord], idx + 2, __ATOMIC_RELAXED);
	return idx;
}

int vgpu_current_index(void)
{
	CUdevice d;
	if (!vgpu_cfg.active || !HELPER(cuCtxGetDevice))
		return -1;
	if (((CUresult(*)(CUdevice *))HELPER(cuCtxGetDevice))(&d) != CUDA_SUCCESS)
		return -1;
	return vgpu_device_index(d);
}
