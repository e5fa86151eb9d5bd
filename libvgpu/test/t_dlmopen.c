/*
 * Class 2: the driver loaded only into a new link-map namespace (glibc's
 * dlmopen), where libvgpu is not: its entry points are ones libvgpu does not
 * know. The program is not linked with -lcuda, so the driver is nowhere in
 * the main namespace. Allocates 4 GiB under a 1 GiB limit through them.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "t.h"

int main(void)
{
#ifdef __GLIBC__
	void *h = dlmopen(LM_ID_NEWLM, "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CHECK(h, "dlmopen: %s", dlerror());
	CUresult (*init)(unsigned int) = (CUresult(*)(unsigned int))dlsym(h, "cuInit");
	CUresult (*devget)(CUdevice *, int) = (CUresult(*)(CUdevice *, int))dlsym(h, "cuDeviceGet");
	CUresult (*ctx)(void **, unsigned int, CUdevice) =
		(CUresult(*)(void **, unsigned int, CUdevice))dlsym(h, "cuCtxCreate_v2");
	CUresult (*alloc)(CUdeviceptr *, size_t) = (CUresult(*)(CUdeviceptr *, size_t))dlsym(h, "cuMemAlloc_v2");
	CHECK(init && devget && ctx && alloc, "driver entry points in the new namespace");
	CUdevice d;
	void *c;
	CUdeviceptr p;
	CHECK_RC(init(0), CUDA_SUCCESS);
	CHECK_RC(devget(&d, 0), CUDA_SUCCESS);
	CHECK_RC(ctx(&c, 0, d), CUDA_SUCCESS);
	CHECK_RC(alloc(&p, 4096 * MiB), CUDA_SUCCESS);
	printf("PASS t_dlmopen\n");
#endif
	return 0;
}
