/*
 * dlsym(RTLD_NEXT) must be resolved from the caller's position. LD_PRELOAD is
 * "probe_a libvgpu", the program links probe_b, so from the program the next
 * "probe" is probe_a's; a lookup done from libvgpu's position would find
 * probe_b's instead. The program does not use the driver, and a lookup
 * of a driver name must not load it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "t.h"

int probe(void) { return 0; }

int main(void)
{
	int (*next)(void) = (int (*)(void))dlsym(RTLD_NEXT, "probe");
	CHECK(next, "dlsym(RTLD_NEXT, probe) found nothing");
	CHECK(next() == 1, "dlsym(RTLD_NEXT) resolved from the wrong object: probe() = %d, want 1", next());
	CHECK(dlsym(RTLD_DEFAULT, "probe") == (void *)probe, "RTLD_DEFAULT lookup");
	/* Looking up a driver-like name must not load the driver into a process without it. */
	CHECK(dlsym(RTLD_DEFAULT, "cuMemAlloc_v2") != NULL, "libvgpu's own cuMemAlloc_v2 is visible");
	CHECK(dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD) == NULL, "a dlsym lookup loaded libcuda.so.1");
	printf("PASS t_next\n");
	return 0;
}
