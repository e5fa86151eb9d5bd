# libvgpu: the C library preloaded into GPU containers (libvgpu/, docs/libvgpu.md).
#
#   build-libvgpu          libvgpu/build/libvgpu.so
#   test-libvgpu           packaging checks, the fake-driver suite on this host (glibc), with
#                          musl and in Debian bullseye (glibc 2.31) and trixie (2.41) chroots,
#                          and the suite against the real NVIDIA driver library
#   test-libvgpu-distros   the chroots alone; built under .cache/ when missing (debootstrap from
#                          a cached tarball of the packages: ~70 s each cold, seconds warm)
#   test-libvgpu-driver    the real-driver suite (Debian non-free libcuda1/libnvidia-ml1, cached)
#   bench-libvgpu          added cost per hooked launch and per allocation

LIBVGPU_BUILD   := $(ROOT)/libvgpu/build
LIBVGPU_SO      := $(LIBVGPU_BUILD)/libvgpu.so
LIBVGPU_SOURCES := $(wildcard libvgpu/src/*.c libvgpu/src/*.h libvgpu/src/*.S libvgpu/include/*.h) libvgpu/src/libvgpu.map
LIBVGPU_CHROOTS := $(CACHE)/libvgpu/chroot
LIBVGPU_DISTROS := bullseye trixie
LIBVGPU_MIRROR  ?= http://deb.debian.org/debian
# One build for every glibc >= 2.17 and for musl: see libvgpu/src/symver.h.
LIBVGPU_CFLAGS  := -O2 -g -fPIC -fvisibility=hidden -fno-stack-protector -U_FORTIFY_SOURCE -Wall -Wextra -Werror \
                   -Ilibvgpu/include -include libvgpu/src/symver.h
LIBVGPU_LDFLAGS := -shared -Wl,--version-script=libvgpu/src/libvgpu.map -Wl,-Bsymbolic -Wl,-z,now \
                   -Wl,--no-as-needed -l:libdl.so.2

# apt-get install, refreshing the package lists once if they are missing or stale.
libvgpu_apt = { apt-get install -y -qq $(1) >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; }; }

TEST_TARGETS  += test-libvgpu
BENCH_TARGETS += bench-libvgpu

.PHONY: build-libvgpu test-libvgpu test-libvgpu-host test-libvgpu-musl test-libvgpu-distros test-libvgpu-driver bench-libvgpu

build-libvgpu: $(LIBVGPU_SO)

$(LIBVGPU_SO): $(LIBVGPU_SOURCES)
	@mkdir -p $(@D)
	$(CC) $(LIBVGPU_CFLAGS) -o $@ $(filter %.c %.S,$^) $(LIBVGPU_LDFLAGS)

test-libvgpu: test-libvgpu-host test-libvgpu-musl test-libvgpu-driver test-libvgpu-distros

test-libvgpu-host: $(LIBVGPU_SO)
	@echo "== libvgpu: host $$(ldd --version | head -1)"
	@libvgpu/test/check_symbols.sh $(LIBVGPU_SO)
	@libvgpu/test/run.sh $(LIBVGPU_SO) $(LIBVGPU_BUILD)/test-host gcc

test-libvgpu-musl: $(LIBVGPU_SO)
	@command -v musl-gcc >/dev/null || { echo "== installing musl-tools"; $(call libvgpu_apt,musl-tools); }
	@echo "== libvgpu: musl $$(dpkg-query -W -f '$${Version}' musl 2>/dev/null), the same libvgpu.so"
	@libvgpu/test/run.sh $(LIBVGPU_SO) $(LIBVGPU_BUILD)/test-musl musl-gcc

# Chroots need root (chroot, mount); elsewhere the suite says so and goes on.
test-libvgpu-distros: $(LIBVGPU_SO)
	@if [ "$$(id -u)" != 0 ]; then echo "skip libvgpu chroots ($(LIBVGPU_DISTROS)): need root for chroot"; exit 0; fi; \
	for d in $(LIBVGPU_DISTROS); do \
	  { [ -x $(LIBVGPU_CHROOTS)/$$d/usr/bin/gcc ] || $(MAKE) --no-print-directory $(LIBVGPU_CHROOTS)/$$d/usr/bin/gcc; } && \
	  $(MAKE) --no-print-directory libvgpu-chroot-$$d || exit 1; \
	done

test-libvgpu-driver: $(LIBVGPU_SO)
	@libvgpu/test/driver/run.sh $(LIBVGPU_SO) $(CACHE) $(LIBVGPU_BUILD)/driver

LIBVGPU_DEBOOTSTRAP = debootstrap --variant=minbase --include=gcc,libc6-dev

# The packages of a chroot, downloaded once: a fresh clone whose .cache is restored builds offline.
$(LIBVGPU_CHROOTS)/%.tgz:
	@command -v debootstrap >/dev/null || { echo "== installing debootstrap"; $(call libvgpu_apt,debootstrap); }
	@mkdir -p $(LIBVGPU_CHROOTS) && rm -rf $(LIBVGPU_CHROOTS)/$*.dl
	@echo "== debootstrap $*: downloading packages into $@ (log: $*.log)"
	@$(LIBVGPU_DEBOOTSTRAP) --make-tarball=$@.tmp $* $(LIBVGPU_CHROOTS)/$*.dl $(LIBVGPU_MIRROR) \
	  > $(LIBVGPU_CHROOTS)/$*.log 2>&1 || { tail -20 $(LIBVGPU_CHROOTS)/$*.log; exit 1; }
	@rm -rf $(LIBVGPU_CHROOTS)/$*.dl && mv $@.tmp $@

$(LIBVGPU_CHROOTS)/%/usr/bin/gcc:
	@[ -s $(LIBVGPU_CHROOTS)/$*.tgz ] || $(MAKE) --no-print-directory $(LIBVGPU_CHROOTS)/$*.tgz
	@rm -rf $(LIBVGPU_CHROOTS)/$*.tmp
	@echo "== debootstrap $* into $(LIBVGPU_CHROOTS)/$* from $*.tgz (log: $*.log)"
	@$(LIBVGPU_DEBOOTSTRAP) --unpack-tarball=$(LIBVGPU_CHROOTS)/$*.tgz $* $(LIBVGPU_CHROOTS)/$*.tmp $(LIBVGPU_MIRROR) \
	  >> $(LIBVGPU_CHROOTS)/$*.log 2>&1 || { tail -20 $(LIBVGPU_CHROOTS)/$*.log; exit 1; }
	@rm -rf $(LIBVGPU_CHROOTS)/$* && mv $(LIBVGPU_CHROOTS)/$*.tmp $(LIBVGPU_CHROOTS)/$*

# The suite inside a chroot: test programs built by its own gcc, against the host's libvgpu.so.
libvgpu-chroot-%: $(LIBVGPU_SO)
	@c=$(LIBVGPU_CHROOTS)/$*; rm -rf $$c/vgpu-test && mkdir -p $$c/vgpu-test/libvgpu; \
	cp -r libvgpu/test libvgpu/include $$c/vgpu-test/libvgpu/ && mkdir -p $$c/vgpu-test/libvgpu/src && \
	cp libvgpu/src/cuda_abi.h $$c/vgpu-test/libvgpu/src/ && cp $(LIBVGPU_SO) $$c/vgpu-test/; \
	mountpoint -q $$c/proc || mount -t proc proc $$c/proc; \
	echo "== libvgpu: chroot $* $$(chroot $$c ldd --version | head -1)"; \
	rc=0; chroot $$c /bin/bash /vgpu-test/libvgpu/test/run.sh /vgpu-test/libvgpu.so /vgpu-test/work gcc || rc=$$?; \
	umount $$c/proc; exit $$rc

bench-libvgpu: $(LIBVGPU_SO)
	@libvgpu/test/bench.sh $(LIBVGPU_SO) $(LIBVGPU_BUILD)/bench
