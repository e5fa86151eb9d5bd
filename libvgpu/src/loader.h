/*
 * The dynamic loader's functions, reached without linking libdl.so.2.
 *
 * Before glibc 2.34 dlopen and friends live in libdl.so.2, since then in
 * libc.so.6, and some images (distroless, slim bases) ship no libdl.so.2 at
 * all. A DT_NEEDED entry for it would stop every dynamic program of such an
 * image from starting, so libvgpu needs only libc.so.6: its references to
 * the loader's functions are weak, bound when libdl.so.2 (or a C library
 * that has them) is loaded with the program, and otherwise looked up at
 * first use in the objects loaded by then (a CUDA program always has them
 * by its first CUDA call: libcuda itself needs them).
 */
#ifndef VGPU_LOADER_H
#define VGPU_LOADER_H

#include <link.h>
#include <stdint.h>

#include "vgpu.h"

/* A defined symbol of one loaded object, from its dynamic symbol table. */
VGPU_HIDDEN void *vgpu_elf_lookup(const struct dl_phdr_info *info, const char *name);
/* Where libvgpu itself is loaded, and the path it was loaded from. */
VGPU_HIDDEN uintptr_t vgpu_self_base(void);
VGPU_HIDDEN const char *vgpu_self_path(void);
/* dlopen, dlerror and dlclose of the C library; NULL / an error when the
 * process has no loader functions at all. */
VGPU_HIDDEN void *vgpu_dlopen(const char *file, int mode);
VGPU_HIDDEN const char *vgpu_dlerror(void);
VGPU_HIDDEN int vgpu_dlclose(void *handle);

#endif
