/*
 * Configuration from the container contract and the attached shared region.
 * Everything here runs once, at the first CUDA or NVML call of a process,
 * never in a constructor: processes that never touch the GPU are unaffected.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"
#include "loader.h"
#include "report.h"
#include "vgpu.h"

struct vgpu_config vgpu_cfg;
struct vgpu_region *vgpu_region;
volatile int vgpu_cu_flag;
volatile int vgpu_nv_flag;

static int init_state;
static int region_shared;
static int ord_map[64]; /* CUDA ordinal -> device index + 2; 0 = not resolved yet */

uint64_t vgpu_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}


static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	for (size_t e = strlen(s); e && (s[e - 1] == ' ' || s[e - 1] == '\t'); e--)
		s[e - 1] = 0;
	return s;
}

/* Splits a comma list in place, entries trimmed, at most max fields; returns how many there were. */
static int split(char *s, char **out, int max)
{
	int n = 0;
	if (!s || !*trim(s))
		return 0;
	for (;;) {
		char *c = strchr(s, ',');
		if (c)
			*c = 0;
		if (n < max)
			out[n] = trim(s);
		n++;
		if (!c)
			return n;
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

/* The contract's values for this process, from the limits file or the environment. */
struct source {
	const char *name; /* for messages: the limits file's path, or "the environment" */
	char vis[1024], mem[1024], core[1024], region[512], version[16];
	int has_vis, has_mem, has_core, has_region, has_version;
};

static void put(char *dst, size_t n, int *has, const char *v)
{
	snprintf(dst, n, "%s", v);
	*has = 1;
}

static void from_env(struct source *s)
{
	const char *v;
	s->name = "the environment";
	if ((v = getenv(VGPU_ENV_VISIBLE_DEVICES)))
		put(s->vis, sizeof(s->vis), &s->has_vis, v);
	if ((v = getenv(VGPU_ENV_MEMORY_LIMITS)))
		put(s->mem, sizeof(s->mem), &s->has_mem, v);
	if ((v = getenv(VGPU_ENV_CORE_LIMITS)))
		put(s->core, sizeof(s->core), &s->has_core, v);
	if ((v = getenv(VGPU_ENV_REGION)))
		put(s->region, sizeof(s->region), &s->has_region, v);
}

static char limits_path[512];

/*
 * The limits file sits beside the libvgpu this process loaded
 * (docs/contract.md#where-limits-come-from): as trusted as the library
 * itself, and found whatever the environment says. Returns 1 when it exists
 * and is not empty (the empty placeholder of the installed library counts as
 * absent), 0 otherwise.
 */
static int from_file(struct source *s)
{
	char buf[4096];
	const char *self = vgpu_self_path();
	const char *slash = strrchr(self, '/');
	if (!slash)
		return 0;
	snprintf(limits_path, sizeof(limits_path), "%.*s/%s", (int)(slash - self), self, VGPU_LIMITS_FILE_NAME);
	int fd = open(limits_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = 0, r;
	while (n < (ssize_t)sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
		n += r;
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	s->name = limits_path;
	for (char *line = buf, *next; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		while (*line == ' ' || *line == '\t')
			line++;
		for (size_t e = strlen(line); e && strchr(" \t\r", line[e - 1]); e--)
			line[e - 1] = 0;
		char *eq = strchr(line, '=');
		if (*line == '#' || !eq)
			continue;
		*eq = 0;
		const char *k = line, *v = eq + 1;
		if (!strcmp(k, VGPU_LIMITS_VERSION_KEY))
			put(s->version, sizeof(s->version), &s->has_version, v);
		else if (!strcmp(k, VGPU_ENV_VISIBLE_DEVICES))
			put(s->vis, sizeof(s->vis), &s->has_vis, v);
		else if (!strcmp(k, VGPU_ENV_MEMORY_LIMITS))
			put(s->mem, sizeof(s->mem), &s->has_mem, v);
		else if (!strcmp(k, VGPU_ENV_CORE_LIMITS))
			put(s->core, sizeof(s->core), &s->has_core, v);
		else if (!strcmp(k, VGPU_ENV_REGION))
			put(s->region, sizeof(s->region), &s->has_region, v);
	}
	return 1;
}

static char problem[VGPU_REASON_LEN];
static int problems;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	if (problems++)
		return;
	va_start(ap, fmt);
	vsnprintf(problem, sizeof(problem), fmt, ap);
	va_end(ap);
}

/*
 * Fills vgpu_cfg from one source. Every entry stands on its own: a damaged
 * entry, or a list shorter than the device list, loses only that device's
 * limit, and is noted (docs/contract.md#malformed-lists-and-devices-without-a-limit).
 */
static void configure(struct source *s)
{
	char *devs[VGPU_MAX_DEVICES], *mems[VGPU_MAX_DEVICES], *cores[VGPU_MAX_DEVICES];
	int nd = 0, nm, nc;

	if ((!s->has_mem || !*s->mem) && (!s->has_core || !*s->core))
		return; /* nothing to enforce: pass everything through */
	nm = split(s->mem, mems, VGPU_MAX_DEVICES);
	nc = split(s->core, cores, VGPU_MAX_DEVICES);
	if (s->has_vis && strcmp(s->vis, "all") && strcmp(s->vis, "none") && strcmp(s->vis, "void"))
		nd = split(s->vis, devs, VGPU_MAX_DEVICES);
	int n = nd ? nd : (nm > nc ? nm : nc);
	if (n > VGPU_MAX_DEVICES) {
		note("%d devices listed, only the first %d are limited", n, VGPU_MAX_DEVICES);
		n = VGPU_MAX_DEVICES;
	}
	if (nd && (nm > nd || nc > nd))
		note("more limits than uuids in " VGPU_ENV_VISIBLE_DEVICES ": the extra limits name no GPU");
	for (int i = 0; i < n; i++) {
		uint64_t v;
		if (nm) {
			if (i >= nm) {
				note(VGPU_ENV_MEMORY_LIMITS " has %d entries for %d GPUs", nm, n);
				vgpu_cfg.mem_missing[i] = 1;
			} else if (parse_u64(mems[i], 1ull << 30, &v)) {
				note(VGPU_ENV_MEMORY_LIMITS " entry %d \"%.24s\" is not a size in MiB", i + 1, mems[i]);
				vgpu_cfg.mem_missing[i] = 1;
			} else {
				vgpu_cfg.mem_limit[i] = v << 20;
			}
		}
		if (nc) {
			if (i >= nc) {
				note(VGPU_ENV_CORE_LIMITS " has %d entries for %d GPUs", nc, n);
				vgpu_cfg.core_missing[i] = 1;
			} else if (parse_u64(cores[i], 100, &v)) {
				note(VGPU_ENV_CORE_LIMITS " entry %d \"%.24s\" is not 0-100", i + 1, cores[i]);
				vgpu_cfg.core_missing[i] = 1;
			} else {
				vgpu_cfg.core_limit[i] = (uint32_t)v;
			}
		}
		if (i < nd) {
			snprintf(vgpu_cfg.uuid[i], VGPU_UUID_LEN, "%s", devs[i]);
			if (!strncasecmp(devs[i], "GPU-", 4) || !strncasecmp(devs[i], "MIG-", 4))
				vgpu_cfg.by_uuid = 1;
		}
	}
	vgpu_cfg.ndev = n;
	vgpu_cfg.active = 1;
}

/* Says, at info level, that the environment's limits are not the ones that hold. */
static void env_ignored(const struct source *f)
{
	const char *names[] = {VGPU_ENV_MEMORY_LIMITS, VGPU_ENV_CORE_LIMITS, VGPU_ENV_VISIBLE_DEVICES, VGPU_ENV_REGION};
	const char *vals[] = {f->mem, f->core, f->vis, f->region};
	for (int i = 0; i < 4; i++) {
		const char *e = getenv(names[i]);
		if (e && strcmp(e, vals[i]))
			vgpu_log(VGPU_LOG_INFO, "%s=%s in the environment is ignored: %s holds the container's limits", names[i],
				 e, f->name);
	}
}

static struct vgpu_region *private_region(void)
{
	void *p = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* The region's limit fields are for the monitor to show; libvgpu enforces vgpu_cfg. */
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

static char why_buf[160];

/*
 * Creates a missing region with every block written, so that a full
 * filesystem fails here, with an error, and never later as SIGBUS in a page
 * fault (docs/contract.md#the-region-file). The file appears under its name
 * only once complete (link of a private temporary file), so no process ever
 * maps a half-made one. Returns 0, or -1 with *why set.
 */
static int create_region(const char *path, const char **why)
{
	static const char zero[4096];
	char tmp[600];
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	unlink(tmp); /* ours by name: left by a crashed process whose pid this one reuses */
	int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0) {
		*why = strerror(errno);
		return -1;
	}
	int rc = -1;
	size_t done = 0;
	/* Every process of the container, whatever its uid, must open it. */
	if (fchmod(fd, 0666) == 0) {
		while (done < sizeof(struct vgpu_region)) {
			size_t k = sizeof(struct vgpu_region) - done;
			ssize_t w = pwrite(fd, zero, k < sizeof(zero) ? k : sizeof(zero), (off_t)done);
			if (w <= 0)
				break;
			done += (size_t)w;
		}
	}
	if (done == sizeof(struct vgpu_region)) {
		void *p = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED) {
			init_header(p);
			__atomic_store_n(&((struct vgpu_region *)p)->header.magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
			munmap(p, sizeof(struct vgpu_region));
			if (link(tmp, path) == 0 || errno == EEXIST)
				rc = 0; /* EEXIST: another process made it first; theirs is used */
		}
	}
	if (rc)
		snprintf(why_buf, sizeof(why_buf), "cannot create it: %s", strerror(errno ? errno : ENOSPC)), *why = why_buf;
	unlink(tmp);
	close(fd);
	return rc;
}

/*
 * Maps the region. A file the node agent created (right size, magic still 0)
 * is initialised under an flock. A file of the wrong size is never fixed up:
 * truncated by a process of the container, it held the usage of processes
 * that still run, and starting a fresh ledger would forget it.
 */
static struct vgpu_region *attach_region(const char *path, const char **why)
{
	struct vgpu_region *r = NULL;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		if (create_region(path, why))
			return NULL;
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (fd < 0) {
		*why = strerror(errno);
		return NULL;
	}
	off_t size = lseek(fd, 0, SEEK_END);
	if (size != (off_t)sizeof(struct vgpu_region)) {
		snprintf(why_buf, sizeof(why_buf),
			 "it is %lld bytes, not %zu: truncated by a process of the container, or made by another libvgpu version",
			 (long long)size, sizeof(struct vgpu_region));
		*why = why_buf;
		close(fd);
		return NULL;
	}
	void *p = mmap(NULL, sizeof(struct vgpu_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		*why = strerror(errno);
		close(fd);
		return NULL;
	}
	r = p;
	if (__atomic_load_n(&r->header.magic, __ATOMIC_ACQUIRE) == 0 && flock(fd, LOCK_EX) == 0) {
		if (__atomic_load_n(&r->header.magic, __ATOMIC_ACQUIRE) == 0) {
			init_header(r);
			__atomic_store_n(&r->header.magic, VGPU_REGION_MAGIC, __ATOMIC_RELEASE);
		}
		flock(fd, LOCK_UN);
	}
	close(fd);
	if (!region_ok(r)) {
		*why = "magic or version does not match this libvgpu";
		munmap(p, sizeof(struct vgpu_region));
		return NULL;
	}
	fill_devices(r);
	return r;
}

static void common_init(void)
{
	int expect = 0;
	struct source src;
	if (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2)
		return;
	if (!__atomic_compare_exchange_n(&init_state, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&init_state, __ATOMIC_ACQUIRE) != 2)
			sched_yield();
		return;
	}
	vgpu_cfg.log_level = vgpu_parse_log_level(getenv(VGPU_ENV_LOG_LEVEL));
	memset(&src, 0, sizeof(src));
	int bad_file = 0;
	if (from_file(&src)) {
		vgpu_cfg.from_file = 1;
		if (!src.has_version || strcmp(src.version, VGPU_LIMITS_VERSION)) {
			/* The environment is no fallback: it is the container's to write. */
			bad_file = 1;
		} else {
			env_ignored(&src);
			configure(&src);
		}
	} else {
		from_env(&src);
		configure(&src);
	}
	if (vgpu_cfg.active) {
		const char *why = VGPU_ENV_REGION " is not set";
		if (src.has_region && *src.region)
			vgpu_region = attach_region(src.region, &why);
		if (vgpu_region) {
			region_shared = 1;
			vgpu_report_shared();
		} else {
			/* Still enforce memory within this process, and say exactly that. */
			vgpu_region = private_region();
			if (vgpu_region) {
				init_header(vgpu_region);
				fill_devices(vgpu_region);
			}
			char text[VGPU_REASON_LEN + 200];
			snprintf(text, sizeof(text), "the shared region \"%.120s\" is unusable: %s", src.has_region ? src.region : "",
				 why);
			vgpu_say("GPU limits are NOT enforced for the whole container", text, VGPU_REASON_NONE);
		}
		if (vgpu_region)
			vgpu_proc_attach(region_shared ? src.region : NULL);
		else
			vgpu_cfg.active = 0;
	}
	if (bad_file && src.has_region && *src.region) {
		/* Nothing to enforce with, but let the monitor see why. */
		const char *why;
		if ((vgpu_region = attach_region(src.region, &why))) {
			region_shared = 1;
			vgpu_report_shared();
		}
	}
	if (bad_file)
		vgpu_unenforced(VGPU_REASON_BAD_ENV, "limits file %.60s: %s is not %s", src.name, VGPU_LIMITS_VERSION_KEY,
				VGPU_LIMITS_VERSION);
	else if (problems > 1)
		vgpu_unenforced(VGPU_REASON_BAD_ENV, "%s (and %d more problems, in %.40s)", problem, problems - 1, src.name);
	else if (problems)
		vgpu_unenforced(VGPU_REASON_BAD_ENV, "%s (in %.60s)", problem, src.name);
	vgpu_report_ready();
	__atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
}

void vgpu_cu_init(void)
{
	common_init();
	vgpu_cuda_table_init();
	__atomic_store_n(&vgpu_cu_flag, vgpu_compute_limited() ? 2 : 1, __ATOMIC_RELEASE);
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

/* The device index of a uuid, matched as the driver matches uuids: ignoring case. */
int vgpu_uuid_index(const char *uuid)
{
	for (int i = 0; i < vgpu_cfg.ndev; i++)
		if (!strcasecmp(uuid, vgpu_cfg.uuid[i]))
			return i;
	return -1;
}

static void unlimited(CUdevice ord, const char *uuid)
{
	vgpu_unenforced(VGPU_REASON_UNLIMITED_DEVICE, "CUDA device %d (%.48s) has no entry in %s", (int)ord,
			uuid ? uuid : "uuid unknown", vgpu_cfg.from_file ? "the limits file" : VGPU_ENV_VISIBLE_DEVICES);
}

/*
 * The device index (position in NVIDIA_VISIBLE_DEVICES) of a CUDA ordinal, or
 * -1 when the device is not limited. Ordinals are matched by uuid when the
 * list names uuids, since CUDA may order devices differently from the list.
 * A GPU the process can use but the list does not name is loud: limits are
 * set, and this one does not have any.
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
	char s[VGPU_UUID_LEN] = "";
	if (vgpu_cfg.by_uuid && HELPER(cuDeviceGetUuid)) {
		CUuuid u;
		if (((CUresult(*)(CUuuid *, CUdevice))HELPER(cuDeviceGetUuid))(&u, ord) != CUDA_SUCCESS)
			return ord < vgpu_cfg.ndev ? ord : -1; /* before cuInit: do not cache */
		format_uuid(&u, s);
		idx = vgpu_uuid_index(s);
	} else if (ord < vgpu_cfg.ndev) {
		idx = ord;
	}
	if (idx < 0)
		unlimited(ord, *s ? s : NULL);
	if (ord < 64)
		__atomic_store_n(&ord_map[ord], idx + 2, __ATOMIC_RELAXED);
	return idx;
}

/* After cuInit: every GPU the process can see either has its limits or is reported. */
void vgpu_check_devices(void)
{
	int n;
	if (!vgpu_cfg.active || !HELPER(cuDeviceGetCount) || !HELPER(cuDeviceGet))
		return;
	if (((CUresult(*)(int *))HELPER(cuDeviceGetCount))(&n) != CUDA_SUCCESS)
		return;
	for (int i = 0; i < n; i++) {
		CUdevice d;
		if (((CUresult(*)(CUdevice *, int))HELPER(cuDeviceGet))(&d, i) == CUDA_SUCCESS)
			vgpu_device_index(d);
	}
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
