/*
 * Reaching the real driver, and handing out hooks instead of its entry points.
 *
 * Programs linked with -lcuda bind straight to libvgpu's exported functions
 * (LD_PRELOAD puts them first). The CUDA runtime instead dlopens libcuda.so.1,
 * fetches cuGetProcAddress with dlsym and every other entry point through it;
 * both lookups pass through here. A pointer the driver hands out is replaced
 * only when it is exactly the real address of a hooked ABI variant, so the
 * caller always gets a hook with the signature it asked for, and everything
 * else is passed through untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sched.h>
#include <string.h>

#include "vgpu.h"

/* glibc only; musl has no dlvsym, so the reference must not be required. */
#pragma weak dlvsym

void *vgpu_cu_real[CU_HOOK_COUNT];
void *vgpu_cu_helper[CU_HELPER_COUNT];
void *vgpu_nv_real[NV_HOOK_COUNT];
void *vgpu_nv_helper[NV_HELPER_COUNT];

#define VGPU_DECL(n) extern void n(void);
VGPU_CU_HOOKS(VGPU_DECL)
VGPU_NVML_HOOKS(VGPU_DECL)
#undef VGPU_DECL
#define VGPU_ADDR(n) (void *)n,
#define VGPU_NAME(n) #n,
static void *const cu_hooks[] = {VGPU_CU_HOOKS(VGPU_ADDR)};
static const char *const cu_names[] = {VGPU_CU_HOOKS(VGPU_NAME)};
static const char *const cu_helper_names[] = {VGPU_CU_HELPERS(VGPU_NAME)};
static void *const nv_hooks[] = {VGPU_NVML_HOOKS(VGPU_ADDR)};
static const char *const nv_names[] = {VGPU_NVML_HOOKS(VGPU_NAME)};
static const char *const nv_helper_names[] = {VGPU_NVML_HELPERS(VGPU_NAME)};

/* ---- the C library's dlsym ------------------------------------------- */

typedef void *(*dlsym_fn)(void *, const char *);
/* Read by the dlsym entry stub (dlsym.S). */
VGPU_HIDDEN void *vgpu_real_dlsym;
extern void vgpu_dlsym_entry(void) VGPU_HIDDEN;
extern void vgpu_dlvsym_entry(void) VGPU_HIDDEN;

static uintptr_t dyn_addr(uintptr_t base, uintptr_t p)
{
	/* glibc relocates .dynamic in place, musl does not. */
	return p < base ? base + p : p;
}

/* Look a defined symbol up in one loaded object's dynamic symbol table. */
static void *elf_lookup(const struct dl_phdr_info *info, const char *name)
{
	const ElfW(Dyn) *dyn = NULL;
	const ElfW(Sym) *symtab = NULL;
	const char *strtab = NULL;
	const uint32_t *gnu = NULL, *sysv = NULL;
	uintptr_t base = info->dlpi_addr;

	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(base + info->dlpi_phdr[i].p_vaddr);
	if (!dyn)
		return NULL;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		switch (dyn->d_tag) {
		case DT_SYMTAB: symtab = (const ElfW(Sym) *)dyn_addr(base, dyn->d_un.d_ptr); break;
		case DT_STRTAB: strtab = (const char *)dyn_addr(base, dyn->d_un.d_ptr); break;
		case DT_GNU_HASH: gnu = (const uint32_t *)dyn_addr(base, dyn->d_un.d_ptr); break;
		case DT_HASH: sysv = (const uint32_t *)dyn_addr(base, dyn->d_un.d_ptr); break;
		}
	}
	if (!symtab || !strtab)
		return NULL;
	if (gnu) {
		uint32_t h = 5381, nb = gnu[0], off = gnu[1], bloom = gnu[2];
		for (const unsigned char *s = (const unsigned char *)name; *s; s++)
			h = h * 33 + *s;
		const uint32_t *buckets = gnu + 4 + bloom * (sizeof(ElfW(Addr)) / 4);
		const uint32_t *chain = buckets + nb;
		uint32_t i = buckets[h % nb];
		if (i < off)
			return NULL;
		for (;; i++) {
			uint32_t h2 = chain[i - off];
			const ElfW(Sym) *s = &symtab[i];
			if ((h | 1) == (h2 | 1) && s->st_shndx != SHN_UNDEF && !strcmp(strtab + s->st_name, name))
				return (void *)(base + s->st_value);
			if (h2 & 1)
				return NULL;
		}
	}
	if (sysv) {
		uint32_t h = 0, g, nb = sysv[0];
		for (const unsigned char *s = (const unsigned char *)name; *s; s++) {
			h = (h << 4) + *s;
			g = h & 0xf0000000u;
			if (g)
				h ^= g >> 24;
			h &= ~g;
		}
		const uint32_t *chain = sysv + 2 + nb;
		for (uint32_t i = sysv[2 + h % nb]; i; i = chain[i]) {
			const ElfW(Sym) *s = &symtab[i];
			if (s->st_shndx != SHN_UNDEF && !strcmp(strtab + s->st_name, name))
				return (void *)(base + s->st_value);
		}
	}
	return NULL;
}

struct find_ctx {
	uintptr_t self;
	void *found;
};

static int find_dlsym_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct find_ctx *c = arg;
	(void)size;
	if (info->dlpi_addr == c->self)
		return 0;
	void *p = elf_lookup(info, "dlsym");
	if (p && p != (void *)vgpu_dlsym_entry && elf_lookup(info, "dlopen")) {
		c->found = p;
		return 1;
	}
	return 0;
}

/* Called by the entry stub when vgpu_real_dlsym is still unset. */
VGPU_HIDDEN void *vgpu_resolve_dlsym(void)
{
	void *p = __atomic_load_n(&vgpu_real_dlsym, __ATOMIC_ACQUIRE);
	if (p)
		return p;
	/* musl binds libvgpu's reference to dlvsym by name, to libvgpu's own. */
	if (dlvsym && (void *)dlvsym != (void *)vgpu_dlvsym_entry)
		p = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
	if (!p) {
		/* musl: no versions, no dlvsym; find the C library's definition. */
		Dl_info self;
		struct find_ctx c = {0, NULL};
		if (dladdr((void *)vgpu_resolve_dlsym, &self))
			c.self = (uintptr_t)self.dli_fbase;
		dl_iterate_phdr(find_dlsym_cb, &c);
		p = c.found;
	}
	if (!p)
		return NULL;
	__atomic_store_n(&vgpu_real_dlsym, p, __ATOMIC_RELEASE);
	return p;
}

static void *real_dlsym(void *handle, const char *name)
{
	dlsym_fn f = (dlsym_fn)vgpu_resolve_dlsym();
	return f ? f(handle, name) : NULL;
}

/* ---- driver tables ----------------------------------------------------- */

static void *open_lib(const char *soname)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
	return h ? h : dlopen(soname, RTLD_NOW);
}

/* 0 = not done, 1 = in progress, 2 = done. */
static int once_begin(int *state)
{
	int expect = 0;
	if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == 2)
		return 0;
	if (__atomic_compare_exchange_n(state, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return 1;
	while (__atomic_load_n(state, __ATOMIC_ACQUIRE) != 2)
		sched_yield();
	return 0;
}

static void once_end(int *state)
{
	__atomic_store_n(state, 2, __ATOMIC_RELEASE);
}

static int cu_table_state, nv_table_state;

void vgpu_cuda_table_init(void)
{
	if (!once_begin(&cu_table_state))
		return;
	if (!vgpu_resolve_dlsym())
		vgpu_unenforced(VGPU_REASON_NO_DLSYM, "cannot find the C library's dlsym");
	void *h = open_lib("libcuda.so.1");
	if (h) {
		for (int i = 0; i < CU_HOOK_COUNT; i++)
			vgpu_cu_real[i] = real_dlsym(h, cu_names[i]);
		for (int i = 0; i < CU_HELPER_COUNT; i++)
			vgpu_cu_helper[i] = real_dlsym(h, cu_helper_names[i]);
		if (!vgpu_cu_real[CU_cuMemAlloc_v2] || !vgpu_cu_helper[CU_cuCtxGetDevice])
			vgpu_unenforced(VGPU_REASON_NO_DRIVER_SYMBOL,
					"libcuda.so.1 lacks cuMemAlloc_v2 or cuCtxGetDevice");
	} else {
		vgpu_log(VGPU_LOG_WARN, "cannot open libcuda.so.1: %s", dlerror());
	}
	once_end(&cu_table_state);
}

void vgpu_nvml_table_init(void)
{
	if (!once_begin(&nv_table_state))
		return;
	void *h = open_lib("libnvidia-ml.so.1");
	if (h) {
		for (int i = 0; i < NV_HOOK_COUNT; i++)
			vgpu_nv_real[i] = real_dlsym(h, nv_names[i]);
		for (int i = 0; i < NV_HELPER_COUNT; i++)
			vgpu_nv_helper[i] = real_dlsym(h, nv_helper_names[i]);
	}
	once_end(&nv_table_state);
}

/*
 * Driver entry points that allocate device memory or launch work, by base
 * name (without the _v2/_v3 ABI and _ptsz/_ptds stream suffixes). Each is
 * hooked in every variant the driver has today; a variant libvgpu does not
 * know (a newer driver, an internal pointer handed out by cuGetProcAddress)
 * reaches the application through a trampoline that reports it when called
 * while the limit it escapes is set (docs/libvgpu.md, "Never silent").
 */
static const struct route {
	const char *base;
	int kind;
} routes[] = {
	{"cuMemAlloc", VGPU_ROUTE_MEM}, {"cuMemAllocPitch", VGPU_ROUTE_MEM}, {"cuMemAllocManaged", VGPU_ROUTE_MEM},
	{"cuMemAllocAsync", VGPU_ROUTE_MEM}, {"cuMemAllocFromPoolAsync", VGPU_ROUTE_MEM},
	{"cuMemCreate", VGPU_ROUTE_MEM}, {"cuArrayCreate", VGPU_ROUTE_MEM}, {"cuArray3DCreate", VGPU_ROUTE_MEM},
	{"cuMipmappedArrayCreate", VGPU_ROUTE_MEM}, {"cuCtxSetLimit", VGPU_ROUTE_MEM},
	{"cuGraphInstantiate", VGPU_ROUTE_MEM}, {"cuGraphInstantiateWithFlags", VGPU_ROUTE_MEM},
	{"cuGraphInstantiateWithParams", VGPU_ROUTE_MEM},
	/* Not allocations, but a free or a memory query libvgpu misses skews the ledger or the reported limit. */
	{"cuMemFree", VGPU_ROUTE_MEM}, {"cuMemFreeAsync", VGPU_ROUTE_MEM}, {"cuMemRelease", VGPU_ROUTE_MEM},
	{"cuArrayDestroy", VGPU_ROUTE_MEM}, {"cuMipmappedArrayDestroy", VGPU_ROUTE_MEM},
	{"cuMemGetInfo", VGPU_ROUTE_MEM}, {"cuDeviceTotalMem", VGPU_ROUTE_MEM},
	/* A lookup libvgpu does not see hands out unhooked entry points of every kind. */
	{"cuGetProcAddress", VGPU_ROUTE_ANY},
	{"cuLaunchKernel", VGPU_ROUTE_LAUNCH}, {"cuLaunchKernelEx", VGPU_ROUTE_LAUNCH},
	{"cuLaunchCooperativeKernel", VGPU_ROUTE_LAUNCH}, {"cuLaunchCooperativeKernelMultiDevice", VGPU_ROUTE_LAUNCH},
	{"cuGraphLaunch", VGPU_ROUTE_LAUNCH}, {"cuLaunch", VGPU_ROUTE_LAUNCH}, {"cuLaunchGrid", VGPU_ROUTE_LAUNCH},
	{"cuLaunchGridAsync", VGPU_ROUTE_LAUNCH},
};

/* Length of a name without its ABI (_v2) and stream (_ptsz, _ptds) suffixes. */
static size_t base_len(const char *s)
{
	size_t n = strlen(s);
	if (n > 5 && (!strcmp(s + n - 5, "_ptsz") || !strcmp(s + n - 5, "_ptds")))
		n -= 5;
	size_t d = n;
	while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9')
		d--;
	if (d < n && d >= 2 && s[d - 1] == 'v' && s[d - 2] == '_')
		n = d - 2;
	return n;
}

int vgpu_route_kind(const char *symbol)
{
	if (!symbol || symbol[0] != 'c' || symbol[1] != 'u')
		return VGPU_ROUTE_NONE;
	size_t n = base_len(symbol);
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (strlen(routes[i].base) == n && !strncmp(routes[i].base, symbol, n))
			return routes[i].kind;
	return VGPU_ROUTE_NONE;
}

/* Whether a call of this kind escapes a limit that is set. */
int vgpu_route_limited(int kind)
{
	CU_ENTER();
	if (!vgpu_cfg.active)
		return 0;
	for (int i = 0; i < vgpu_cfg.ndev; i++) {
		if (kind != VGPU_ROUTE_LAUNCH && vgpu_cfg.mem_limit[i])
			return 1;
		if (kind != VGPU_ROUTE_MEM && vgpu_cfg.core_limit[i] > 0 && vgpu_cfg.core_limit[i] < 100)
			return 1;
	}
	return 0;
}

/* ---- trampolines for entry points libvgpu does not know ----------------- */

static struct {
	void *target;
	int kind;
	int reported;
	char name[64];
} tramp[VGPU_TRAMPOLINES];
static int ntramp, tramp_lock;

/* Called by trampoline slot (dlsym.S) before it jumps to the driver. */
VGPU_HIDDEN void *vgpu_tramp_called(unsigned int slot)
{
	if (!__atomic_load_n(&tramp[slot].reported, __ATOMIC_ACQUIRE) && vgpu_route_limited(tramp[slot].kind) &&
	    !__atomic_exchange_n(&tramp[slot].reported, 1, __ATOMIC_ACQ_REL))
		vgpu_unenforced(VGPU_REASON_DRIVER_UNKNOWN,
				"%s: called through a driver entry point libvgpu does not know", tramp[slot].name);
	return tramp[slot].target;
}

static void *trampoline(const char *symbol, void *real, int kind)
{
	void *r = NULL;
	while (__atomic_exchange_n(&tramp_lock, 1, __ATOMIC_ACQUIRE))
		sched_yield();
	for (int i = 0; i < ntramp && !r; i++)
		if (tramp[i].target == real)
			r = vgpu_trampolines + 16 * i;
	if (!r && ntramp < VGPU_TRAMPOLINES) {
		int i = ntramp;
		tramp[i].target = real;
		tramp[i].kind = kind;
		strncpy(tramp[i].name, symbol, sizeof(tramp[i].name) - 1);
		__atomic_store_n(&ntramp, i + 1, __ATOMIC_RELEASE);
		r = vgpu_trampolines + 16 * i;
	}
	__atomic_store_n(&tramp_lock, 0, __ATOMIC_RELEASE);
	if (!r && vgpu_route_limited(kind))
		vgpu_unenforced(VGPU_REASON_DRIVER_UNKNOWN,
				"%s: more unknown driver entry points than libvgpu can track", symbol);
	return r ? r : real;
}

/*
 * A lookup of some "cu..." name must not load the driver into a process that
 * never asked for it: without libcuda loaded, no pointer can be the driver's.
 */
static int loaded(int *state, const char *soname)
{
	if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == 2)
		return 1;
	void *h = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
	if (!h)
		return 0;
	dlclose(h); /* NOLOAD took a reference */
	return 1;
}

void *vgpu_map_cuda(const char *symbol, void *real)
{
	for (int i = 0; i < CU_HOOK_COUNT; i++)
		if (cu_hooks[i] == real)
			return real; /* already ours */
	int kind = vgpu_route_kind(symbol);
	/*
	 * Without libcuda loaded here no pointer can be its: do not load it. A
	 * driver entry point found anyway (a copy in another link-map namespace)
	 * is one libvgpu does not know.
	 */
	if (loaded(&cu_table_state, "libcuda.so.1")) {
		vgpu_cuda_table_init();
		for (int i = 0; i < CU_HOOK_COUNT; i++)
			if (vgpu_cu_real[i] == real)
				return cu_hooks[i];
	}
	return kind ? trampoline(symbol, real, kind) : real;
}

static void *map_nvml(void *real)
{
	if (!loaded(&nv_table_state, "libnvidia-ml.so.1"))
		return real;
	vgpu_nvml_table_init();
	for (int i = 0; i < NV_HOOK_COUNT; i++)
		if (vgpu_nv_real[i] == real)
			return nv_hooks[i];
	return real;
}

static void *map_any(const char *name, void *p)
{
	if (!p || !name)
		return p;
	if (name[0] == 'c' && name[1] == 'u')
		return vgpu_map_cuda(name, p);
	if (!strncmp(name, "nvml", 4))
		return map_nvml(p);
	return p;
}

/*
 * dlsym with any handle but RTLD_NEXT lands here (RTLD_NEXT is forwarded by
 * the stub with a tail jump, so the C library still sees the real caller).
 */
VGPU_HIDDEN void *vgpu_dlsym_hook(void *handle, const char *name)
{
	return map_any(name, real_dlsym(handle, name));
}

/* The C library's dlvsym (glibc only), found from libvgpu's position. */
VGPU_HIDDEN void *vgpu_real_dlvsym;

VGPU_HIDDEN void *vgpu_resolve_dlvsym(void)
{
	void *p = __atomic_load_n(&vgpu_real_dlvsym, __ATOMIC_ACQUIRE);
	if (!p) {
		p = real_dlsym(RTLD_NEXT, "dlvsym");
		__atomic_store_n(&vgpu_real_dlvsym, p, __ATOMIC_RELEASE);
	}
	return p;
}

VGPU_HIDDEN void *vgpu_dlvsym_hook(void *handle, const char *name, const char *version)
{
	void *(*f)(void *, const char *, const char *) = (void *(*)(void *, const char *, const char *))
		vgpu_resolve_dlvsym();
	return f ? map_any(name, f(handle, name, version)) : NULL;
}

/*
 * dlsym(RTLD_NEXT) and dlvsym(RTLD_NEXT) of a driver entry point libvgpu
 * hooks: the hook, whichever object asks. The C library would answer from
 * the caller's position, and a library loaded after libvgpu would get the
 * driver's own function. NULL for every other name, which the stub then
 * forwards to the C library with the caller's return address.
 */
VGPU_HIDDEN void *vgpu_next_hook(const char *name)
{
	if (!name)
		return NULL;
	if (name[0] == 'c' && name[1] == 'u') {
		for (int i = 0; i < CU_HOOK_COUNT; i++)
			if (!strcmp(name, cu_names[i]))
				return cu_hooks[i];
		/* A variant libvgpu does not hook, of an entry point that matters: the driver's, reported when called. */
		int kind = vgpu_route_kind(name);
		if (kind && loaded(&cu_table_state, "libcuda.so.1")) {
			void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
			void *p = h ? real_dlsym(h, name) : NULL;
			if (h)
				dlclose(h);
			return p ? vgpu_map_cuda(name, p) : NULL;
		}
	} else if (!strncmp(name, "nvml", 4)) {
		for (int i = 0; i < NV_HOOK_COUNT; i++)
			if (!strcmp(name, nv_names[i]))
				return nv_hooks[i];
	}
	return NULL;
}
