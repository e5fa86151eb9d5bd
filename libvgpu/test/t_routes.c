/*
 * Class 2 of the routes around the hooks, written as an attacker would:
 *   t_routes next     dlsym/dlvsym(RTLD_NEXT) from libraries after libvgpu (linked and dlopened),
 *                     dlvsym on the driver's handle: every hooked name yields the hook, limits hold
 *   t_routes unknown [NAME]
 *                     looks every entry point up like the runtime at start-up (the fake driver
 *                     hands out pointers libvgpu does not know); then calls NAME through it
 *   t_routes graph [alloc]  instantiates a graph, with a memory allocation node if "alloc"
 *   t_routes heap     cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE) and legacy arrays count
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

#include "t.h"

void *probe_next(const char *name);
void *probe_vnext(const char *name);
CUresult cuCtxSetLimit(int, size_t);
CUresult cuArrayCreate(CUarray *, const CUDA_ARRAY_DESCRIPTOR_v1 *);
CUresult cuArray3DCreate(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR_v1 *);
CUresult cuGraphInstantiateWithFlags(CUgraphExec *, CUgraph, unsigned long long);

typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*gpa_v2_t)(const char *, void **, int, cuuint64_t, int *);

static void expect(void *p, const char *lib, const char *sym, const char *route)
{
	Dl_info di;
	CHECK(p && dladdr(p, &di) && di.dli_fname && di.dli_sname, "%s: %s: nothing or no symbol", route, sym);
	CHECK(strstr(di.dli_fname, lib) && !strcmp(di.dli_sname, sym), "%s: got %s in %s, want %s in %s", route,
	      di.dli_sname, di.dli_fname, sym, lib);
}

/* A hooked allocation reached through p must hold the 1 GiB limit. */
static void holds(void *p, const char *route)
{
	CUdeviceptr d;
	expect(p, "libvgpu", "cuMemAlloc_v2", route);
	CHECK_RC(((alloc_t)p)(&d, 4096 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
}

static void routes_next(void)
{
	holds(probe_next("cuMemAlloc_v2"), "dlsym(RTLD_NEXT) from a linked library");
	holds(probe_vnext("cuMemAlloc_v2"), "dlvsym(RTLD_NEXT) from a linked library");
	expect(probe_next("cuGetProcAddress_v2"), "libvgpu", "cuGetProcAddress_v2", "dlsym(RTLD_NEXT)");
	expect(probe_next("cuLaunchKernel"), "libvgpu", "cuLaunchKernel", "dlsym(RTLD_NEXT)");
	/* What libvgpu does not hook stays the driver's own, found from the caller's position. */
	expect(probe_next("cuCtxGetDevice"), "libcuda", "cuCtxGetDevice", "dlsym(RTLD_NEXT), unhooked");
	CHECK(probe_next("cuNoSuchFunction") == NULL, "RTLD_NEXT of a name nobody defines");

	void *late = dlopen("libprobe_late.so", RTLD_NOW | RTLD_LOCAL);
	CHECK(late, "dlopen libprobe_late.so: %s", dlerror());
	void *(*late_next)(const char *) = (void *(*)(const char *))dlsym(late, "probe_next");
	void *(*late_vnext)(const char *) = (void *(*)(const char *))dlsym(late, "probe_vnext");
	CHECK(late_next && late_vnext, "probe_late symbols");
	holds(late_next("cuMemAlloc_v2"), "dlsym(RTLD_NEXT) from a dlopened library");
	holds(late_vnext("cuMemAlloc_v2"), "dlvsym(RTLD_NEXT) from a dlopened library");

	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CHECK(h, "dlopen libcuda");
#ifdef __GLIBC__
	/* The driver defines no symbol versions, so glibc finds nothing; a driver that did must still give the hook. */
	void *v = dlvsym(h, "cuMemAlloc_v2", "GLIBC_2.2.5");
	if (v)
		holds(v, "dlvsym(libcuda handle)");
#endif
	holds(dlsym(h, "cuMemAlloc_v2"), "dlsym(libcuda handle)");
	expect(dlsym(h, "cuCtxGetDevice"), "libcuda", "cuCtxGetDevice", "dlsym(libcuda handle), unhooked");
}

/* Every entry point the fake driver knows, looked up as the CUDA runtime does at start-up. */
static const char *const names[] = {
	"cuMemAlloc", "cuMemAllocPitch", "cuMemAllocManaged", "cuMemAllocAsync", "cuMemAllocFromPoolAsync",
	"cuMemFree", "cuMemFreeAsync", "cuMemCreate", "cuMemRelease", "cuArrayCreate", "cuArray3DCreate",
	"cuMemGetInfo", "cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch",
	"cuCtxGetDevice", "cuDriverGetVersion", "cuCtxSetLimit", NULL,
};

static void routes_unknown(const char *call)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CHECK(h, "dlopen libcuda");
	gpa_v2_t gpa = (gpa_v2_t)dlsym(h, "cuGetProcAddress_v2");
	void *fn[32] = {0};
	for (int i = 0; names[i]; i++)
		for (int flags = 0; flags <= 2; flags += 2)
			CHECK_RC(gpa(names[i], &fn[i], 12040, (cuuint64_t)flags, NULL), CUDA_SUCCESS);
	if (!call)
		return;
	CUdeviceptr d;
	size_t pitch;
	int i = 0;
	while (names[i] && strcmp(names[i], call))
		i++;
	CHECK(names[i], "unknown name %s", call);
	CUresult r = 0;
	if (!strcmp(call, "cuMemAlloc"))
		r = ((alloc_t)fn[i])(&d, 4096 * MiB);
	else if (!strcmp(call, "cuMemAllocFromPoolAsync"))
		r = ((CUresult(*)(CUdeviceptr *, size_t, CUmemoryPool, CUstream))fn[i])(&d, 4096 * MiB, NULL, NULL);
	else if (!strcmp(call, "cuMemAllocPitch"))
		r = ((CUresult(*)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int))fn[i])(&d, &pitch, 4096, MiB, 4);
	else if (!strcmp(call, "cuLaunchKernelEx"))
		r = ((CUresult(*)(const CUlaunchConfig *, CUfunction, void **, void **))fn[i])(NULL, (CUfunction)(void *)10, NULL, NULL);
	else if (!strcmp(call, "cuGraphLaunch"))
		r = ((CUresult(*)(CUgraphExec, CUstream))fn[i])((CUgraphExec)(void *)10, NULL);
	/* The call goes through to the driver (it is the driver's to refuse), with its arguments intact. */
	CHECK(r == CUDA_SUCCESS, "%s through the trampoline returned %d", call, r);
}

static void routes_graph(int alloc)
{
	CUgraphExec e;
	CUgraph g = (CUgraph)(void *)(uintptr_t)((100 << 1) | alloc);
	CHECK_RC(cuGraphInstantiateWithFlags(&e, g, 0), CUDA_SUCCESS);
	CHECK(e == (CUgraphExec)(void *)100, "instance %p", (void *)e);
	CHECK_RC(cuGraphLaunch(e, NULL), CUDA_SUCCESS);
}

static void routes_heap(void)
{
	CUdeviceptr d;
	CHECK_RC(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 900 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&d, 200 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 2048 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 8 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemAlloc_v2(&d, 900 * MiB), CUDA_SUCCESS);
	CHECK_RC(cuMemFree_v2(d), CUDA_SUCCESS);
	/* Legacy arrays: 32-bit descriptors. */
	CUarray a;
	CUDA_ARRAY_DESCRIPTOR_v1 big = {16384, 16384, 0x20, 4}; /* 4 GiB of float4 */
	CUDA_ARRAY3D_DESCRIPTOR_v1 big3 = {1024, 1024, 1024, 0x20, 1, 0};
	CHECK_RC(cuArrayCreate(&a, &big), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(cuArray3DCreate(&a, &big3), CUDA_ERROR_OUT_OF_MEMORY);
	CUDA_ARRAY_DESCRIPTOR_v1 small = {1024, 1024, 0x20, 4};
	CHECK_RC(cuArrayCreate(&a, &small), CUDA_SUCCESS);
	CHECK_RC(cuArrayDestroy(a), CUDA_SUCCESS);
}

int main(int argc, char **argv)
{
	CHECK(argc >= 2, "usage: t_routes next|unknown [NAME]|graph [alloc]|heap");
	if (!strcmp(argv[1], "unknown")) {
		t_setup();
		routes_unknown(argc > 2 ? argv[2] : NULL);
	} else {
		t_setup();
		if (!strcmp(argv[1], "next"))
			routes_next();
		else if (!strcmp(argv[1], "graph"))
			routes_graph(argc > 2);

		else
			routes_heap();
	}
	printf("PASS t_routes %s\n", argv[1]);
	return 0;
}
