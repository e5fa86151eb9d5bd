/*
 * A fake libcuda.so.1 for libvgpu's tests: FAKE_CUDA_DEVICES devices (default
 * 1) of FAKE_CUDA_MEM_MIB MiB (default 16384), allocations that take memory,
 * kernels that take simulated time (a CUfunction's value is its duration in
 * microseconds, queued and executed back to back as on a GPU), and cuGetProcAddress(_v2) that, like the real driver, picks
 * per-version and per-thread-stream variants. Built with -Bsymbolic so that
 * the entry points it hands out are its own, as the real driver's are.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../src/cuda_abi.h"
#include "fake.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_ALLOCS 65536

static int initialised, cur_dev = -1;
static uint64_t next_addr = 0x700000000000ull;
static struct { uint64_t key, size; int dev; } allocs[MAX_ALLOCS];
static int nallocs;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Read once: a getenv per call would be most of an allocation's cost in the benchmark. */
static int ndev(void)
{
	static int n;
	return n ? n : (n = fake_env_int("FAKE_CUDA_DEVICES", 1));
}
static uint64_t total_mem(void)
{
	static uint64_t t;
	return t ? t : (t = (uint64_t)fake_env_int("FAKE_CUDA_MEM_MIB", 16384) << 20);
}

static CUresult take(int dev, uint64_t size, unsigned long long *key)
{
	struct fake_stats *s = fake_stats_map();
	if (!initialised)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (dev < 0 || dev >= ndev())
		return CUDA_ERROR_INVALID_VALUE;
	if (size == 0)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	uint64_t u = __atomic_load_n(&s->mem_used[dev], __ATOMIC_RELAXED);
	if (u + size > total_mem() || nallocs == MAX_ALLOCS) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	__atomic_fetch_add(&s->mem_used[dev], size, __ATOMIC_RELAXED);
	*key = next_addr;
	next_addr += (size + 0xfffff) & ~0xfffffull;
	allocs[nallocs].key = *key;
	allocs[nallocs].size = size;
	allocs[nallocs].dev = dev;
	nallocs++;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

static CUresult give(uint64_t key)
{
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	for (int i = nallocs - 1; i >= 0; i--) {
		if (allocs[i].key == key) {
			__atomic_fetch_sub(&fake_stats_map()->mem_used[allocs[i].dev], allocs[i].size, __ATOMIC_RELAXED);
			allocs[i] = allocs[--nallocs];
			r = CUDA_SUCCESS;
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	return r;
}

/*
 * Like a GPU: a launch queues the kernel behind the ones already queued and
 * returns; the device executes them back to back, whatever the CPU does. The
 * launch blocks only while the queue holds more than QUEUE_NS of work.
 */
#define QUEUE_NS 100000000ull
static CUresult run_kernel(CUfunction f)
{
	if (!initialised || cur_dev < 0)
		return CUDA_ERROR_NOT_INITIALIZED;
	uint64_t ns = (uint64_t)(uintptr_t)f * 1000;
	if (!ns)
		return CUDA_SUCCESS;
	struct fake_stats *s = fake_stats_map();
	uint64_t now = fake_now_ns(), until = __atomic_load_n(&s->busy_until_ns[cur_dev], __ATOMIC_RELAXED), next;
	do {
		next = (until > now ? until : now) + ns;
	} while (!__atomic_compare_exchange_n(&s->busy_until_ns[cur_dev], &until, next, 1, __ATOMIC_ACQ_REL,
					      __ATOMIC_RELAXED));
	__atomic_fetch_add(&s->queued_ns[cur_dev], ns, __ATOMIC_ACQ_REL);
	if (next - now > QUEUE_NS) {
		uint64_t wake = next - QUEUE_NS;
		struct timespec ts = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL))
			;
	}
	return CUDA_SUCCESS;
}

EXPORT CUresult cuInit(unsigned int flags) { (void)flags; initialised = 1; return CUDA_SUCCESS; }
EXPORT CUresult cuDriverGetVersion(int *v) { *v = 12040; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGetCount(int *n) { if (!initialised) return CUDA_ERROR_NOT_INITIALIZED; *n = ndev(); return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGet(CUdevice *d, int ord)
{
	if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
	if (ord < 0 || ord >= ndev()) return CUDA_ERROR_INVALID_VALUE;
	*d = ord;
	return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetUuid(CUuuid *u, CUdevice d)
{
	if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_VALUE;
	memset(u, 0, sizeof(*u));
	u->bytes[15] = (char)(0xa0 + d);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) { return cuDeviceGetUuid(u, d); }
EXPORT CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice d)
{
	if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_VALUE;
	*b = total_mem();
	return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceTotalMem(unsigned int *b, CUdevice d)
{
	size_t v;
	CUresult r = cuDeviceTotalMem_v2(&v, d);
	if (!r) *b = v > 0xffffffffu ? 0xffffffffu : (unsigned int)v;
	return r;
}
EXPORT CUresult cuCtxCreate_v2(void **ctx, unsigned int flags, CUdevice d)
{
	(void)flags;
	if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= ndev()) return CUDA_ERROR_INVALID_VALUE;
	cur_dev = d;
	*ctx = (void *)(uintptr_t)(d + 1);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSetCurrent(void *ctx) { cur_dev = (int)(uintptr_t)ctx - 1; return CUDA_SUCCESS; }
EXPORT CUresult cuCtxGetDevice(CUdevice *d)
{
	if (!initialised || cur_dev < 0) return 201; /* CUDA_ERROR_INVALID_CONTEXT */
	*d = cur_dev;
	return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return take(cur_dev, n, p); }
EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *p, unsigned int n)
{
	unsigned long long k;
	CUresult r = take(cur_dev, n, &k);
	if (!r) *p = (CUdeviceptr_v1)(k >> 20); /* 32-bit handle, unique per allocation */
	if (!r) allocs[nallocs - 1].key = *p;
	return r;
}
EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned int f) { (void)f; return take(cur_dev, n, p); }
EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t w, size_t h, unsigned int e)
{
	(void)e;
	*pitch = (w + 511) & ~(size_t)511;
	return take(cur_dev, *pitch * h, p);
}
EXPORT CUresult cuMemAllocPitch(CUdeviceptr_v1 *p, unsigned int *pitch, unsigned int w, unsigned int h, unsigned int e)
{
	size_t pp;
	CUdeviceptr k;
	CUresult r = cuMemAllocPitch_v2(&k, &pp, w, h, e);
	if (!r) { *p = (CUdeviceptr_v1)(k >> 20); allocs[nallocs - 1].key = *p; *pitch = (unsigned int)pp; }
	return r;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return give(p); }
EXPORT CUresult cuMemFree(CUdeviceptr_v1 p) { return give(p); }
EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { (void)s; return take(cur_dev, n, p); }
EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t n, CUstream s) { (void)s; return take(cur_dev, n, p); }
EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t n, CUmemoryPool pool, CUstream s)
{
	(void)s; (void)pool;
	return take(cur_dev, n, p);
}
EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t n, CUmemoryPool pool, CUstream s)
{
	return cuMemAllocFromPoolAsync(p, n, pool, s);
}
EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return give(p); }
EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { (void)s; return give(p); }
/*
 * VMM as the driver documents it: physical memory lives while a handle or a
 * mapping holds it. cuMemRelease drops a handle, cuMemUnmap drops every
 * mapping of a range (whole mappings only), cuMemRetainAllocationHandle
 * takes a handle again from a mapped address (the same handle value).
 * Exported memory (POSIX file descriptors: a memfd holding the size, device
 * and a count of the processes that hold it) is freed when the last process
 * lets go of it. With FAKE_CUDA_EXPORT_ONE_FILE=1 every export is instead a
 * new open file of one shared file (as the NVIDIA driver exports onto a fresh
 * descriptor of /dev/nvidiactl): all exports have the same inode, and the
 * fake tells them apart by the file position, which the descriptor carries.
 */
struct vmm_shared { uint64_t size; int dev; int procs; };
_Static_assert(sizeof(struct vmm_shared) == sizeof(struct fake_export), "fake_export mirrors vmm_shared");
struct vmm { uint64_t handle, size; int dev, handles, maps, fd; struct vmm_shared *sh; };
struct vmap { uint64_t va, size; struct vmm *m; };
#define MAX_VMM 4096
static struct vmm vmms[MAX_VMM];
static struct vmap vmaps[MAX_VMM];
static uint64_t next_handle = 0x100000;

static struct vmm *vmm_of(uint64_t h)
{
	for (int i = 0; i < MAX_VMM; i++)
		if (vmms[i].handle == h && vmms[i].handles + vmms[i].maps > 0)
			return &vmms[i];
	return NULL;
}

static struct vmm *vmm_new(void)
{
	for (int i = 0; i < MAX_VMM; i++)
		if (vmms[i].handles + vmms[i].maps == 0) {
			memset(&vmms[i], 0, sizeof(vmms[i]));
			vmms[i].handle = next_handle++;
			vmms[i].fd = -1;
			return &vmms[i];
		}
	return NULL;
}

static void vmm_put(struct vmm *m)
{
	if (m->handles + m->maps > 0)
		return;
	if (!m->sh || __atomic_sub_fetch(&m->sh->procs, 1, __ATOMIC_ACQ_REL) == 0)
		__atomic_fetch_sub(&fake_stats_map()->mem_used[m->dev], m->size, __ATOMIC_RELAXED);
	if (m->sh && m->fd != -2)
		munmap(m->sh, sizeof(*m->sh));
	if (m->fd >= 0)
		close(m->fd);
	m->handle = 0;
}

EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t n, const CUmemAllocationProp *prop,
			    unsigned long long flags)
{
	(void)flags;
	if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
	if (!prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || !n || prop->location.id < 0 ||
	    prop->location.id >= ndev())
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct fake_stats *s = fake_stats_map();
	struct vmm *m = vmm_new();
	if (!m || __atomic_load_n(&s->mem_used[prop->location.id], __ATOMIC_RELAXED) + n > total_mem()) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	__atomic_fetch_add(&s->mem_used[prop->location.id], n, __ATOMIC_RELAXED);
	m->size = n;
	m->dev = prop->location.id;
	m->handles = 1;
	*h = m->handle;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
	pthread_mutex_lock(&mu);
	struct vmm *m = vmm_of(h);
	if (!m || !m->handles) { pthread_mutex_unlock(&mu); return CUDA_ERROR_INVALID_VALUE; }
	m->handles--;
	vmm_put(m);
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuMemAddressReserve(CUdeviceptr *p, size_t n, size_t align, CUdeviceptr addr, unsigned long long f)
{
	(void)align; (void)addr; (void)f;
	pthread_mutex_lock(&mu);
	*p = next_addr;
	next_addr += (n + 0x1fffff) & ~0x1fffffull;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuMemAddressFree(CUdeviceptr p, size_t n) { (void)p; (void)n; return CUDA_SUCCESS; }
EXPORT CUresult cuMemMap(CUdeviceptr va, size_t n, size_t off, CUmemGenericAllocationHandle h, unsigned long long f)
{
	(void)f;
	pthread_mutex_lock(&mu);
	struct vmm *m = vmm_of(h);
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	if (m && m->handles && off + n <= m->size && n) {
		int overlap = 0, slot = -1;
		for (int i = 0; i < MAX_VMM; i++) {
			if (vmaps[i].m)
				overlap |= va < vmaps[i].va + vmaps[i].size && vmaps[i].va < va + n;
			else if (slot < 0)
				slot = i;
		}
		if (!overlap && slot >= 0) {
			vmaps[slot] = (struct vmap){va, n, m};
			m->maps++;
			r = CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&mu);
	return r;
}
EXPORT CUresult cuMemUnmap(CUdeviceptr va, size_t n)
{
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_VMM; i++) {
		struct vmap *v = &vmaps[i];
		if (!v->m || v->va >= va + n || va >= v->va + v->size)
			continue;
		if (v->va < va || v->va + v->size > va + n) { r = CUDA_ERROR_INVALID_VALUE; break; } /* partial */
		struct vmm *m = v->m;
		v->m = NULL;
		m->maps--;
		vmm_put(m);
		r = CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&mu);
	return r;
}
EXPORT CUresult cuMemSetAccess(CUdeviceptr va, size_t n, const void *desc, size_t count)
{
	(void)va; (void)n; (void)desc; (void)count;
	return CUDA_SUCCESS;
}
EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr)
{
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < MAX_VMM; i++) {
		struct vmap *v = &vmaps[i];
		if (v->m && (uint64_t)(uintptr_t)addr >= v->va && (uint64_t)(uintptr_t)addr < v->va + v->size) {
			v->m->handles++;
			*h = v->m->handle;
			r = CUDA_SUCCESS;
			break;
		}
	}
	pthread_mutex_unlock(&mu);
	return r;
}
#define CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR 1
EXPORT CUresult cuMemExportToShareableHandle(void *out, CUmemGenericAllocationHandle h, int type,
					     unsigned long long f)
{
	(void)f;
	if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	struct vmm *m = vmm_of(h);
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	if (m && m->handles) {
		if (!m->sh && fake_env_int("FAKE_CUDA_EXPORT_ONE_FILE", 0)) {
			struct fake_stats *st = fake_stats_map();
			int id = __atomic_fetch_add(&st->nexports, 1, __ATOMIC_ACQ_REL);
			int fd = open(getenv("FAKE_CUDA_STATS"), O_RDONLY | O_CLOEXEC);
			if (id >= 256 || fd < 0 || lseek(fd, id + 1, SEEK_SET) != id + 1) {
				if (fd >= 0) close(fd);
				pthread_mutex_unlock(&mu);
				return CUDA_ERROR_OUT_OF_MEMORY;
			}
			m->sh = (struct vmm_shared *)&st->exports[id];
			*m->sh = (struct vmm_shared){m->size, m->dev, 1};
			*(int *)out = fd;
			m->fd = -2; /* the shared mapping is fake_stats: never unmapped */
			pthread_mutex_unlock(&mu);
			return CUDA_SUCCESS;
		}
		if (m->fd == -2) {
			pthread_mutex_unlock(&mu);
			return CUDA_ERROR_INVALID_VALUE; /* one export per allocation in this mode */
		}
		if (!m->sh) {
			int fd = memfd_create("fake-vmm", MFD_CLOEXEC);
			void *p = MAP_FAILED;
			if (fd >= 0 && ftruncate(fd, sizeof(struct vmm_shared)) == 0)
				p = mmap(NULL, sizeof(struct vmm_shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (p == MAP_FAILED) {
				if (fd >= 0) close(fd);
				pthread_mutex_unlock(&mu);
				return CUDA_ERROR_OUT_OF_MEMORY;
			}
			m->sh = p;
			m->fd = fd;
			*m->sh = (struct vmm_shared){m->size, m->dev, 1};
		}
		*(int *)out = fcntl(m->fd, F_DUPFD_CLOEXEC, 0);
		r = *(int *)out >= 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_unlock(&mu);
	return r;
}
EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os, int type)
{
	if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_INVALID_VALUE;
	int fd = (int)(intptr_t)os, one_file = fake_env_int("FAKE_CUDA_EXPORT_ONE_FILE", 0);
	struct vmm_shared *sh;
	if (one_file) {
		off_t id = lseek(fd, 0, SEEK_CUR) - 1;
		if (id < 0 || id >= 256) return CUDA_ERROR_INVALID_VALUE;
		sh = (struct vmm_shared *)&fake_stats_map()->exports[id];
	} else {
		sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (sh == MAP_FAILED) return CUDA_ERROR_INVALID_VALUE;
	}
	pthread_mutex_lock(&mu);
	struct vmm *m = vmm_new();
	if (!m) { pthread_mutex_unlock(&mu); if (!one_file) munmap(sh, sizeof(*sh)); return CUDA_ERROR_OUT_OF_MEMORY; }
	if (one_file)
		m->fd = -2;
	__atomic_fetch_add(&sh->procs, 1, __ATOMIC_ACQ_REL);
	m->sh = sh;
	m->size = sh->size;
	m->dev = sh->dev;
	m->handles = 1;
	*h = m->handle;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuArrayCreate_v2(CUarray *a, const CUDA_ARRAY_DESCRIPTOR *d)
{
	unsigned long long k;
	CUresult r = take(cur_dev, (uint64_t)d->Width * (d->Height ? d->Height : 1) * 4 * d->NumChannels, &k);
	if (!r) *a = (CUarray)(uintptr_t)k;
	return r;
}
EXPORT CUresult cuArray3DCreate_v2(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
	unsigned long long k;
	CUresult r = take(cur_dev,
			  (uint64_t)d->Width * (d->Height ? d->Height : 1) * (d->Depth ? d->Depth : 1) * 4 * d->NumChannels, &k);
	if (!r) *a = (CUarray)(uintptr_t)k;
	return r;
}
EXPORT CUresult cuArrayCreate(CUarray *a, const CUDA_ARRAY_DESCRIPTOR_v1 *d)
{
	CUDA_ARRAY_DESCRIPTOR d2 = {d->Width, d->Height, d->Format, d->NumChannels};
	return cuArrayCreate_v2(a, &d2);
}
EXPORT CUresult cuArray3DCreate(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR_v1 *d)
{
	CUDA_ARRAY3D_DESCRIPTOR d2 = {d->Width, d->Height, d->Depth, d->Format, d->NumChannels, d->Flags};
	return cuArray3DCreate_v2(a, &d2);
}
/* The device-side malloc heap takes device memory of its size. */
static uint64_t heap_key;
EXPORT CUresult cuCtxSetLimit(int limit, size_t value)
{
	if (limit != CU_LIMIT_MALLOC_HEAP_SIZE)
		return CUDA_SUCCESS;
	if (heap_key)
		give(heap_key);
	heap_key = 0;
	return value ? take(cur_dev, value, (unsigned long long *)&heap_key) : CUDA_SUCCESS;
}
EXPORT CUresult cuArrayDestroy(CUarray a) { return give((uint64_t)(uintptr_t)a); }
EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *a, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels)
{
	unsigned long long k;
	(void)levels;
	CUresult r = take(cur_dev, (uint64_t)d->Width * (d->Height ? d->Height : 1) * 4 * d->NumChannels * 2, &k);
	if (!r) *a = (CUmipmappedArray)(uintptr_t)k;
	return r;
}
EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray a) { return give((uint64_t)(uintptr_t)a); }
EXPORT CUresult cuMemGetInfo_v2(size_t *f, size_t *t)
{
	if (!initialised || cur_dev < 0) return 201;
	*t = total_mem();
	*f = *t - __atomic_load_n(&fake_stats_map()->mem_used[cur_dev], __ATOMIC_RELAXED);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuMemGetInfo(unsigned int *f, unsigned int *t)
{
	size_t ff, tt;
	CUresult r = cuMemGetInfo_v2(&ff, &tt);
	if (!r) { *f = ff > 0xffffffffu ? 0xffffffffu : (unsigned int)ff; *t = tt > 0xffffffffu ? 0xffffffffu : (unsigned int)tt; }
	return r;
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
			       unsigned int by, unsigned int bz, unsigned int sh, CUstream s, void **p, void **e)
{
	(void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)p; (void)e;
	return run_kernel(f);
}
EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
				    unsigned int by, unsigned int bz, unsigned int sh, CUstream s, void **p, void **e)
{
	return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, e);
}
EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **p, void **e)
{
	(void)c; (void)p; (void)e;
	return run_kernel(f);
}
EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **p, void **e)
{
	return cuLaunchKernelEx(c, f, p, e);
}
EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
					  unsigned int bx, unsigned int by, unsigned int bz, unsigned int sh, CUstream s,
					  void **p)
{
	return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, NULL);
}
EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
					       unsigned int bx, unsigned int by, unsigned int bz, unsigned int sh,
					       CUstream s, void **p)
{
	return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, NULL);
}
EXPORT CUresult cuLaunchCooperativeKernelMultiDevice(CUDA_LAUNCH_PARAMS *list, unsigned int n, unsigned int flags)
{
	(void)n; (void)flags;
	return run_kernel((CUfunction)(void *)list);
}
/*
 * Graphs: a CUgraph's value is (kernel time in microseconds << 1) | 1 when it
 * holds a memory allocation node; its instance (CUgraphExec) is the kernel
 * time. Nodes: one kernel node (handle 1), and the allocation node (handle 11).
 */
static CUresult instantiate(CUgraphExec *e, CUgraph g)
{
	*e = (CUgraphExec)(void *)((uintptr_t)g >> 1);
	return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphInstantiate(CUgraphExec *e, CUgraph g, CUgraphNode *n, char *l, size_t len)
{
	(void)n; (void)l; (void)len;
	return instantiate(e, g);
}
EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *e, CUgraph g, CUgraphNode *n, char *l, size_t len)
{
	return cuGraphInstantiate(e, g, n, l, len);
}
EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long f) { (void)f; return instantiate(e, g); }
EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
	(void)p;
	return instantiate(e, g);
}
EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
	(void)p;
	return instantiate(e, g);
}
EXPORT CUresult cuGraphGetNodes(CUgraph g, CUgraphNode *nodes, size_t *n)
{
	size_t want = 1 + ((uintptr_t)g & 1);
	if (nodes) {
		nodes[0] = (CUgraphNode)(void *)1;
		if (want > 1 && *n > 1)
			nodes[1] = (CUgraphNode)(void *)(uintptr_t)(1 + CU_GRAPH_NODE_TYPE_MEM_ALLOC);
		if (*n > want)
			*n = want;
	} else {
		*n = want;
	}
	return CUDA_SUCCESS;
}
EXPORT CUresult cuGraphNodeGetType(CUgraphNode n, int *t)
{
	*t = (int)(uintptr_t)n - 1;
	return CUDA_SUCCESS;
}
/* A graph's value is its total kernel time in microseconds. */
EXPORT CUresult cuGraphLaunch(CUgraphExec g, CUstream s) { (void)s; return run_kernel((CUfunction)(void *)g); }
EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { return cuGraphLaunch(g, s); }

/*
 * Same behaviour as exported entry points but not exported: what an unknown
 * driver build would hand out (FAKE_CUDA_UNKNOWN_PROCADDR=1: for cuMemAlloc;
 * =2: for every name in unknown[]).
 */
static CUresult internal_mem_alloc(CUdeviceptr *p, size_t n) { return take(cur_dev, n, p); }
static CUresult internal_pool_alloc(CUdeviceptr *p, size_t n, CUmemoryPool pool, CUstream s)
{
	(void)pool; (void)s;
	return take(cur_dev, n, p);
}
static CUresult internal_pitch_alloc(CUdeviceptr *p, size_t *pitch, size_t w, size_t h, unsigned int e)
{
	(void)e;
	*pitch = (w + 511) & ~(size_t)511;
	return take(cur_dev, *pitch * h, p);
}
static CUresult internal_launch_ex(const CUlaunchConfig *c, CUfunction f, void **p, void **e)
{
	(void)c; (void)p; (void)e;
	return run_kernel(f);
}
static CUresult internal_graph_launch(CUgraphExec g, CUstream s) { (void)s; return run_kernel((CUfunction)(void *)g); }
static const struct { const char *name; void *fn; } unknown[] = {
	{"cuMemAlloc", (void *)internal_mem_alloc},
	{"cuMemAllocFromPoolAsync", (void *)internal_pool_alloc},
	{"cuMemAllocPitch", (void *)internal_pitch_alloc},
	{"cuLaunchKernelEx", (void *)internal_launch_ex},
	{"cuGraphLaunch", (void *)internal_graph_launch},
	{0, 0},
};

struct proc {
	const char *name;
	void *v1;        /* before v2_since, or always */
	void *v2;        /* from CUDA version v2_since */
	int v2_since;
	void *ptsz;      /* per-thread default stream variant */
};

#define F(x) (void *)x
CUresult cuGetProcAddress(const char *, void **, int, cuuint64_t);
CUresult cuGetProcAddress_v2(const char *, void **, int, cuuint64_t, int *);
static const struct proc procs[] = {
	{"cuInit", F(cuInit), 0, 0, 0},
	{"cuDriverGetVersion", F(cuDriverGetVersion), 0, 0, 0},
	{"cuGetProcAddress", F(cuGetProcAddress), F(cuGetProcAddress_v2), 12000, 0},
	{"cuDeviceGet", F(cuDeviceGet), 0, 0, 0},
	{"cuDeviceGetCount", F(cuDeviceGetCount), 0, 0, 0},
	{"cuDeviceGetUuid", F(cuDeviceGetUuid), F(cuDeviceGetUuid_v2), 11040, 0},
	{"cuDeviceTotalMem", F(cuDeviceTotalMem), F(cuDeviceTotalMem_v2), 3020, 0},
	{"cuCtxCreate", 0, F(cuCtxCreate_v2), 3020, 0},
	{"cuCtxSetCurrent", F(cuCtxSetCurrent), 0, 0, 0},
	{"cuCtxGetDevice", F(cuCtxGetDevice), 0, 0, 0},
	{"cuMemAlloc", F(cuMemAlloc), F(cuMemAlloc_v2), 3020, 0},
	{"cuMemAllocPitch", F(cuMemAllocPitch), F(cuMemAllocPitch_v2), 3020, 0},
	{"cuMemAllocManaged", F(cuMemAllocManaged), 0, 0, 0},
	{"cuMemFree", F(cuMemFree), F(cuMemFree_v2), 3020, 0},
	{"cuMemAllocAsync", F(cuMemAllocAsync), 0, 0, F(cuMemAllocAsync_ptsz)},
	{"cuMemAllocFromPoolAsync", F(cuMemAllocFromPoolAsync), 0, 0, F(cuMemAllocFromPoolAsync_ptsz)},
	{"cuMemFreeAsync", F(cuMemFreeAsync), 0, 0, F(cuMemFreeAsync_ptsz)},
	{"cuMemCreate", F(cuMemCreate), 0, 0, 0},
	{"cuMemRelease", F(cuMemRelease), 0, 0, 0},
	{"cuMemAddressReserve", F(cuMemAddressReserve), 0, 0, 0},
	{"cuMemAddressFree", F(cuMemAddressFree), 0, 0, 0},
	{"cuMemMap", F(cuMemMap), 0, 0, 0},
	{"cuMemUnmap", F(cuMemUnmap), 0, 0, 0},
	{"cuMemSetAccess", F(cuMemSetAccess), 0, 0, 0},
	{"cuMemRetainAllocationHandle", F(cuMemRetainAllocationHandle), 0, 0, 0},
	{"cuMemExportToShareableHandle", F(cuMemExportToShareableHandle), 0, 0, 0},
	{"cuMemImportFromShareableHandle", F(cuMemImportFromShareableHandle), 0, 0, 0},
	{"cuArrayCreate", F(cuArrayCreate), F(cuArrayCreate_v2), 3020, 0},
	{"cuArray3DCreate", F(cuArray3DCreate), F(cuArray3DCreate_v2), 3020, 0},
	{"cuCtxSetLimit", F(cuCtxSetLimit), 0, 0, 0},
	{"cuLaunchCooperativeKernelMultiDevice", F(cuLaunchCooperativeKernelMultiDevice), 0, 0, 0},
	{"cuGraphInstantiate", F(cuGraphInstantiate), F(cuGraphInstantiateWithFlags), 11000, 0},
	{"cuGraphInstantiateWithParams", F(cuGraphInstantiateWithParams), 0, 0, F(cuGraphInstantiateWithParams_ptsz)},
	{"cuArrayDestroy", F(cuArrayDestroy), 0, 0, 0},
	{"cuMemGetInfo", F(cuMemGetInfo), F(cuMemGetInfo_v2), 3020, 0},
	{"cuLaunchKernel", F(cuLaunchKernel), 0, 0, F(cuLaunchKernel_ptsz)},
	{"cuLaunchKernelEx", F(cuLaunchKernelEx), 0, 0, F(cuLaunchKernelEx_ptsz)},
	{"cuLaunchCooperativeKernel", F(cuLaunchCooperativeKernel), 0, 0, F(cuLaunchCooperativeKernel_ptsz)},
	{"cuGraphLaunch", F(cuGraphLaunch), 0, 0, F(cuGraphLaunch_ptsz)},
	{0, 0, 0, 0, 0},
};

static int lookup(const char *sym, void **pfn, int ver, cuuint64_t flags)
{
	*pfn = NULL;
	for (const struct proc *p = procs; p->name; p++) {
		if (strcmp(p->name, sym))
			continue;
		int mode = fake_env_int("FAKE_CUDA_UNKNOWN_PROCADDR", 0);
		for (int i = 0; mode && unknown[i].name && ver >= 3020; i++) {
			if (!strcmp(sym, unknown[i].name) && (mode == 2 || i == 0)) {
				*pfn = unknown[i].fn;
				return 0;
			}
		}
		if ((flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && p->ptsz)
			*pfn = p->ptsz;
		else if (p->v2 && ver >= p->v2_since)
			*pfn = p->v2;
		else
			*pfn = p->v1;
		return *pfn ? 0 : 2; /* CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT */
	}
	return 1; /* CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND */
}

EXPORT CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, cuuint64_t flags)
{
	return lookup(sym, pfn, ver, flags) ? CUDA_ERROR_NOT_FOUND : CUDA_SUCCESS;
}

EXPORT CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, cuuint64_t flags, int *status)
{
	int st = lookup(sym, pfn, ver, flags);
	if (status)
		*status = st;
	return st ? CUDA_ERROR_NOT_FOUND : CUDA_SUCCESS;
}
