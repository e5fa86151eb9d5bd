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
	if (p && p != (void *)vgpu_dlsym_entry) {
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
	if (dlvsym)
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

/* Entry points that cuGetProcAddress must resolve to a hook in every variant. */
static int must_hook(const char *symbol)
{
	static const char *const names[] = {
		"cuMemAlloc", "cuMemFree", "cuMemAllocManaged", "cuMemAllocAsync",
		"cuMemCreate", "cuMemGetInfo", "cuLaunchKernel", NULL,
	};
	for (int i = 0; names[i]; i++)
		if (!strcmp(symbol, names[i]))
			return 1;
	return 0;
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

void *vgpu_map_cuda(const char *symbol, void *real, int checked)
{
	if (!loaded(&cu_table_state, "libcuda.so.1"))
		return real;
	vgpu_cuda_table_init();
	for (int i = 0; i < CU_HOOK_COUNT; i++)
		if (vgpu_cu_real[i] == real)
			return cu_hooks[i];
	if (checked && symbol && must_hook(symbol))
		vgpu_unenforced(VGPU_REASON_DRIVER_UNKNOWN,
				"cuGetProcAddress(\"%s\") returned an entry point libvgpu does not know", symbol);
	return real;
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

/*
 * dlsym with any handle but RTLD_NEXT lands here (RTLD_NEXT is forwarded by
 * the stub with a tail jump, so the C library still sees the real caller).
 */
VGPU_HIDDEN void *vgpu_dlsym_hook(void *handle, const char *name)
{
	void *p = real_dlsym(handle, name);
	if (!p || !name)
		return p;
	if (name[0] == 'c' && name[1] == 'u')
		return vgpu_map_cuda(name, p, 0);
	if (!strncmp(name, "nvml", 4))
		return map_nvml(p);
	return p;
}
