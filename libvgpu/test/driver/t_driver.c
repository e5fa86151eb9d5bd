/*
 * Against the real NVIDIA driver (no GPU needed): prints, for every name on
 * stdin, what each lookup route returns, as "route name version flags rc
 * object:symbol+offset". Run once without libvgpu (the reference) and once
 * with it; run.sh compares the two. Also prints what the first calls return
 * (cuInit, allocation, launch, NVML) so that a failing cuInit can be shown
 * not to change what the application sees.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int (*gpa_t)(const char *, void **, int, unsigned long long);
typedef int (*gpa2_t)(const char *, void **, int, unsigned long long, int *);

static const char *where(void *p, char *buf, size_t n)
{
	Dl_info di;
	if (!p)
		return "null";
	if (!dladdr(p, &di) || !di.dli_fname) {
		snprintf(buf, n, "unknown:%p", p);
		return buf;
	}
	const char *base = strrchr(di.dli_fname, '/') ? strrchr(di.dli_fname, '/') + 1 : di.dli_fname;
	const char *obj = !strncmp(base, "libvgpu", 7) ? "libvgpu"
			  : !strncmp(base, "libcuda", 7) ? "libcuda"
			  : !strncmp(base, "libnvidia-ml", 12) ? "libnvidia-ml" : base;
	if (di.dli_sname && di.dli_saddr == p)
		snprintf(buf, n, "%s:%s", obj, di.dli_sname);
	else
		snprintf(buf, n, "%s:?+%#lx", obj, (unsigned long)((uintptr_t)p - (uintptr_t)di.dli_fbase));
	return buf;
}

static const int versions[] = {11030, 11040, 11050, 11060, 11070, 11080, 12000, 12010, 12020,
			       12030, 12040, 12050, 12060, 12070, 12080, 12090, 0};

int main(int argc, char **argv)
{
	char buf[512], w[256];
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		printf("dlopen libcuda.so.1: %s\n", dlerror());
		return 1;
	}
	void *late = argc > 1 ? dlopen(argv[1], RTLD_NOW | RTLD_LOCAL) : NULL;
	void *(*late_next)(const char *) = late ? (void *(*)(const char *))dlsym(late, "probe_next") : NULL;
	gpa_t gpa = (gpa_t)dlsym(h, "cuGetProcAddress");
	gpa2_t gpa2 = (gpa2_t)dlsym(h, "cuGetProcAddress_v2");
	int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
	printf("call cuInit rc=%d\n", init(0));
	while (fgets(buf, sizeof(buf), stdin)) {
		buf[strcspn(buf, "\n")] = 0;
		if (!buf[0])
			continue;
		if (!strncmp(buf, "nvml", 4)) {
			void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
			printf("dlsym %s - - - %s\n", buf, where(nv ? dlsym(nv, buf) : NULL, w, sizeof(w)));
			continue;
		}
		printf("dlsym %s - - - %s\n", buf, where(dlsym(h, buf), w, sizeof(w)));
		if (late_next)
			printf("next %s - - - %s\n", buf, where(late_next(buf), w, sizeof(w)));
		for (const int *v = versions; *v; v++) {
			for (unsigned long long flags = 0; flags <= 2; flags++) {
				void *p = NULL;
				int st = -1;
				int rc = gpa2(buf, &p, *v, flags, &st);
				printf("gpa2 %s %d %llu %d/%d %s\n", buf, *v, flags, rc, st, where(p, w, sizeof(w)));
				p = NULL;
				rc = gpa(buf, &p, *v, flags);
				printf("gpa %s %d %llu %d %s\n", buf, *v, flags, rc, where(p, w, sizeof(w)));
			}
		}
	}
	/* What an application sees when cuInit failed: the same codes, with or without libvgpu. */
	unsigned long long d = 0;
	size_t f = 0, t = 0;
	printf("call cuMemAlloc_v2 rc=%d\n", ((int (*)(unsigned long long *, size_t))dlsym(h, "cuMemAlloc_v2"))(&d, 1 << 20));
	printf("call cuMemGetInfo_v2 rc=%d\n", ((int (*)(size_t *, size_t *))dlsym(h, "cuMemGetInfo_v2"))(&f, &t));
	printf("call cuLaunchKernel rc=%d\n", ((int (*)(void *, unsigned, unsigned, unsigned, unsigned, unsigned,
						       unsigned, unsigned, void *, void **, void **))dlsym(h, "cuLaunchKernel"))(
						      NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL));
	printf("call cuCtxSetLimit rc=%d\n", ((int (*)(int, size_t))dlsym(h, "cuCtxSetLimit"))(2, 1 << 20));
	void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	int (*ninit)(void) = nv ? (int (*)(void))dlsym(nv, "nvmlInit_v2") : NULL;
	printf("call nvmlInit_v2 rc=%d\n", ninit ? ninit() : -1);
	return 0;
}
