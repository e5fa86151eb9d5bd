/*
 * A library that reaches the driver by itself: dlsym(RTLD_NEXT) and
 * dlvsym(RTLD_NEXT) resolve from its own position, after libvgpu.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

void *probe_next(const char *name) { return dlsym(RTLD_NEXT, name); }
#ifdef __GLIBC__
void *probe_vnext(const char *name) { return dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5"); }
#else
void *probe_vnext(const char *name) { return dlsym(RTLD_NEXT, name); }
#endif
