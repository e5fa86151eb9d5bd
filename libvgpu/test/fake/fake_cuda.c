/*
 * A fake libcuda.so.1 for libvgpu's tests: FAKE_CUDA_DEVICES devices (default
 * 1) of FAKE_CUDA_MEM_MIB MiB (default 16384), allocations that take memory,
 * kernels that take simulated time (a CUfunction's value is its duration in
 * microseconds, queued and executed back to back as on a GPU), and cuGetProcAddress(_v2) that, like the real driver, picks
 * per-version and per-thread-stream variants. Built with -Bsymbolic so that
 * the entry points it hands out are its own, as the real driver's are.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
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

static int ndev(void) { return fake_env_int("FAKE_CUDA_DEVICES", 1); }
static uint64_t total_mem(void) { return (uint64_t)fake_env_int("FAKE_CUDA_MEM_MIB", 16384) << 20; }

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
EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t n, const CUmemAllocationProp *prop,
			    unsigned long long flags)
{
	(void)flags;
	if (!prop || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
	return take(prop->location.id, n, h);
}
EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return give(h); }
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
