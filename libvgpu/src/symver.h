/*
 * Included first in every libvgpu translation unit (-include). Binds each C
 * library function libvgpu calls to the oldest x86_64 symbol version, so that
 * one build, made on a current distribution, loads on glibc 2.17 and later
 * (test/check_symbols.sh enforces the ceiling). musl ignores symbol versions
 * and binds by name, which is why the same file also loads there.
 */
#ifndef VGPU_SYMVER_H
#define VGPU_SYMVER_H
#if defined(__x86_64__) && !defined(VGPU_NO_SYMVER) && !defined(__ASSEMBLER__)
#define VGPU_PIN(sym, ver) __asm__(".symver " #sym "," #sym "@" #ver)
VGPU_PIN(dlopen, GLIBC_2.2.5);
VGPU_PIN(dlvsym, GLIBC_2.2.5);
VGPU_PIN(dlerror, GLIBC_2.2.5);
VGPU_PIN(dlclose, GLIBC_2.2.5);
VGPU_PIN(dladdr, GLIBC_2.2.5);
VGPU_PIN(dl_iterate_phdr, GLIBC_2.2.5);
VGPU_PIN(memcpy, GLIBC_2.2.5);
VGPU_PIN(clock_gettime, GLIBC_2.17);
VGPU_PIN(clock_nanosleep, GLIBC_2.17);
#endif
#endif
