/*
 * A library that reaches the driver by itself: dlsym(RTLD_NEXT) and
 * dlvsym(RTLD_NEXT) resolve from its own position, after libvgpu. The
 * lookups are not tail calls, so that the C library sees this library, not
 * its caller, as the one asking.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

static void *volatile last;

void *probe_next(const char *name)
{
	last = dlsym(RTLD_NEXT, name);
	return last;
}

void *probe_vnext(const char *name)
{
#ifdef __GLIBC__
	last = dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5");
#else
	last = dlsym(RTLD_NEXT, name);
#endif
	return last;
}
