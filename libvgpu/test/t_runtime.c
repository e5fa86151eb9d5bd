/*
 * Test 2: a program that finds the driver the way the CUDA runtime does:
 * dlopen("libcuda.so.1"), dlsym(cuGetProcAddress_v2), then every entry point
 * through it, with per-version and per-thread-stream variants. It must get
 * libvgpu's hook of exactly the variant the driver chose, the untouched
 * driver function for everything libvgpu does not hook, and the limits.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

#include "t.h"

typedef CUresult (*gpa_v2_t)(const char *, void **, int, cuuint64_t, int *);
typedef CUresult (*gpa_t)(const char *, void **, int, cuuint64_t);
static gpa_v2_t gpa;

static void *get(const char *name, int ver, cuuint64_t flags)
{
	void *p = NULL;
	int status = -1;
	CUresult r = gpa(name, &p, ver, flags, &status);
	CHECK(r == CUDA_SUCCESS && p && status == 0, "cuGetProcAddress_v2(%s, %d): %d status %d", name, ver, r, status);
	return p;
}

/* Which object and symbol a pointer belongs to. */
static void expect(void *p, const char *lib, const char *sym)
{
	Dl_info di;
	CHECK(dladdr(p, &di) && di.dli_fname && di.dli_sname, "dladdr failed for %s", sym);
	CHECK(strstr(di.dli_fname, lib) && !strcmp(di.dli_sname, sym), "got %s in %s, want %s in %s", di.dli_sname,
	      di.dli_fname, sym, lib);
}

int main(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CHECK(h, "dlopen: %s", dlerror());
	gpa = (gpa_v2_t)dlsym(h, "cuGetProcAddress_v2");
	CHECK(gpa, "dlsym(cuGetProcAddress_v2)");
	expect((void *)gpa, "libvgpu", "cuGetProcAddress_v2");

	/* The driver's own cuGetProcAddress entries resolve to the hooks too. */
	expect(get("cuGetProcAddress", 12000, 0), "libvgpu", "cuGetProcAddress_v2");
	expect(get("cuGetProcAddress", 11030, 0), "libvgpu", "cuGetProcAddress");

	CUresult (*init)(unsigned int) = (CUresult(*)(unsigned int))get("cuInit", 12000, 0);
	CUresult (*devget)(CUdevice *, int) = (CUresult(*)(CUdevice *, int))get("cuDeviceGet", 12000, 0);
	CUresult (*ctxcreate)(void **, unsigned int, CUdevice) =
		(CUresult(*)(void **, unsigned int, CUdevice))get("cuCtxCreate", 12000, 0);
	CUdevice dev;
	void *ctx;
	CHECK_RC(init(0), CUDA_SUCCESS);
	CHECK_RC(devget(&dev, 0), CUDA_SUCCESS);
	CHECK_RC(ctxcreate(&ctx, 0, dev), CUDA_SUCCESS);

	/* Per-version variants: the hook of the very ABI the driver returned. */
	void *alloc_v2 = get("cuMemAlloc", 12000, 0), *alloc_v1 = get("cuMemAlloc", 3010, 0);
	expect(alloc_v2, "libvgpu", "cuMemAlloc_v2");
	expect(alloc_v1, "libvgpu", "cuMemAlloc");
	expect(get("cuMemGetInfo", 12000, 0), "libvgpu", "cuMemGetInfo_v2");
	expect(get("cuMemFree", 12000, 0), "libvgpu", "cuMemFree_v2");
	/* Per-thread default stream variants. */
	expect(get("cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM), "libvgpu",
	       "cuLaunchKernel_ptsz");
	expect(get("cuLaunchKernel", 12000, 0), "libvgpu", "cuLaunchKernel");
	expect(get("cuMemAllocAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM), "libvgpu",
	       "cuMemAllocAsync_ptsz");
	expect(get("cuGraphLaunch", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM), "libvgpu",
	       "cuGraphLaunch_ptsz");
	/* Everything else is the driver's own function, untouched. */
	expect(get("cuCtxGetDevice", 12000, 0), "libcuda", "cuCtxGetDevice");
	expect(get("cuDriverGetVersion", 12000, 0), "libcuda", "cuDriverGetVersion");
	void *p = (void *)1;
	int status = -1;
	CHECK(gpa("cuNoSuchFunction", &p, 12000, 0, &status) == CUDA_ERROR_NOT_FOUND && !p && status == 1,
	      "unknown symbol: status %d", status);

	/* The limits hold through the fetched pointers, whatever the variant. */
	CUresult (*mem_alloc)(CUdeviceptr *, size_t) = (CUresult(*)(CUdeviceptr *, size_t))alloc_v2;
	CUresult (*mem_alloc_v1)(CUdeviceptr_v1 *, unsigned int) = (CUresult(*)(CUdeviceptr_v1 *, unsigned int))alloc_v1;
	CUresult (*mem_free)(CUdeviceptr) = (CUresult(*)(CUdeviceptr))get("cuMemFree", 12000, 0);
	CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream) =
		(CUresult(*)(CUdeviceptr *, size_t, CUstream))get("cuMemAllocAsync", 12000, 2);
	CUresult (*free_async)(CUdeviceptr, CUstream) = (CUresult(*)(CUdeviceptr, CUstream))get("cuMemFreeAsync", 12000, 2);
	CUdeviceptr a, b;
	CUdeviceptr_v1 c;
	CHECK_RC(mem_alloc(&a, 900 * MiB), CUDA_SUCCESS);
	CHECK_RC(mem_alloc(&b, 200 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(mem_alloc_v1(&c, 200 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(alloc_async(&b, 200 * MiB, NULL), CUDA_ERROR_OUT_OF_MEMORY);
	CHECK_RC(mem_free(a), CUDA_SUCCESS);
	CHECK_RC(alloc_async(&b, 200 * MiB, NULL), CUDA_SUCCESS);
	CHECK_RC(free_async(b, NULL), CUDA_SUCCESS);
	CHECK_RC(mem_alloc(&b, 1000 * MiB), CUDA_SUCCESS);

	/* The legacy cuGetProcAddress found by dlsym is hooked as well. */
	gpa_t gpa1 = (gpa_t)dlsym(h, "cuGetProcAddress");
	CHECK(gpa1, "dlsym(cuGetProcAddress)");
	CHECK_RC(gpa1("cuMemAlloc", &p, 12000, 0), CUDA_SUCCESS);
	expect(p, "libvgpu", "cuMemAlloc_v2");
	CHECK_RC(((CUresult(*)(CUdeviceptr *, size_t))p)(&a, 100 * MiB), CUDA_ERROR_OUT_OF_MEMORY);
	/* NVML found the way go-nvml finds it: dlopen + dlsym. */
	void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	CHECK(nv, "dlopen libnvidia-ml: %s", dlerror());
	void *meminfo = dlsym(nv, "nvmlDeviceGetMemoryInfo_v2");
	expect(meminfo, "libvgpu", "nvmlDeviceGetMemoryInfo_v2");
	expect(dlsym(nv, "nvmlDeviceGetCount_v2"), "libnvidia-ml", "nvmlDeviceGetCount_v2");
	nvmlDevice_t nd;
	nvmlMemory_v2_t m;
	memset(&m, 0, sizeof(m));
	CHECK(((nvmlReturn_t(*)(unsigned int, nvmlDevice_t *))dlsym(nv, "nvmlDeviceGetHandleByIndex_v2"))(0, &nd) == 0,
	      "nvml handle");
	CHECK(((nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_v2_t *))meminfo)(nd, &m) == 0 && m.total == 1024 * MiB &&
		      m.used + m.free + m.reserved == m.total,
	      "nvml memory through dlsym: total %llu", m.total);
	printf("PASS t_runtime\n");
	return 0;
}
