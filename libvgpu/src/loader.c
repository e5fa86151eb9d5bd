/*
 * The dynamic loader's functions without a dependency on libdl.so.2: see
 * loader.h.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <string.h>

#include "loader.h"

/* Weak: bound only where the C library or a loaded libdl.so.2 has them. */
#pragma weak dlopen
#pragma weak dlerror
#pragma weak dlclose

static uintptr_t dyn_addr(uintptr_t base, uintptr_t p)
{
	/* glibc relocates .dynamic in place, musl does not. */
	return p < base ? base + p : p;
}

/* Look a defined symbol up in one loaded object's dynamic symbol table. */
void *vgpu_elf_lookup(const struct dl_phdr_info *info, const char *name)
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

/* ---- libvgpu's own object ------------------------------------------- */

struct self_ctx {
	uintptr_t addr;
	uintptr_t base;
	const char *name;
};

static int self_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct self_ctx *c = arg;
	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD && c->addr >= lo && c->addr < lo + ph->p_memsz) {
			c->base = info->dlpi_addr;
			c->name = info->dlpi_name;
			return 1;
		}
	}
	return 0;
}

/* Found once; every thread that races here finds the same answer. */
static struct self_ctx self;

static void find_self(void)
{
	if (__atomic_load_n(&self.name, __ATOMIC_ACQUIRE))
		return;
	struct self_ctx c = {(uintptr_t)&find_self, 0, NULL};
	dl_iterate_phdr(self_cb, &c);
	self.base = c.base;
	__atomic_store_n(&self.name, c.name ? c.name : "", __ATOMIC_RELEASE);
}

uintptr_t vgpu_self_base(void)
{
	find_self();
	return self.base;
}

const char *vgpu_self_path(void)
{
	find_self();
	return self.name;
}

/* ---- dlopen, dlerror, dlclose ----------------------------------------- */

struct sym_ctx {
	const char *name;
	uintptr_t self;
	void *found;
};

static int sym_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct sym_ctx *c = arg;
	(void)size;
	if (info->dlpi_addr == c->self)
		return 0;
	c->found = vgpu_elf_lookup(info, c->name);
	return c->found != NULL;
}

/* The first definition of name outside libvgpu, in load order: the one the
 * dynamic linker would have bound. */
static void *loaded(void **cache, const char *name)
{
	void *p = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
	if (p)
		return p;
	struct sym_ctx c = {name, vgpu_self_base(), NULL};
	dl_iterate_phdr(sym_cb, &c);
	if (c.found)
		__atomic_store_n(cache, c.found, __ATOMIC_RELEASE);
	return c.found;
}

static void *dlopen_fn, *dlerror_fn, *dlclose_fn;

void *vgpu_dlopen(const char *file, int mode)
{
	void *(*f)(const char *, int) = dlopen ? dlopen : (void *(*)(const char *, int))loaded(&dlopen_fn, "dlopen");
	return f ? f(file, mode) : NULL;
}

const char *vgpu_dlerror(void)
{
	char *(*f)(void) = dlerror ? dlerror : (char *(*)(void))loaded(&dlerror_fn, "dlerror");
	const char *e = f ? f() : "the process has no dynamic loader functions (no libdl.so.2 loaded)";
	return e ? e : "unknown error";
}

int vgpu_dlclose(void *handle)
{
	int (*f)(void *) = dlclose ? dlclose : (int (*)(void *))loaded(&dlclose_fn, "dlclose");
	return f ? f(handle) : -1;
}
