#!/bin/bash
# An image with the C library but no libdl.so.2 (glibc 2.34 and later have
# dlopen in libc.so.6; slim images drop the stub): libvgpu must still load
# into every dynamic program and enforce its limits. Run inside a disposable
# root (the glibc chroots) after run.sh built the suite in WORKDIR: it hides
# the chroot's libdl.so.2 for the duration and puts it back.
#   nodl.sh LIBVGPU WORKDIR
set -eu -o pipefail
LIB=$(readlink -f "$1")
W=$2
fail() { echo "FAIL $*" >&2; exit 1; }

dl=
for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64; do
	[ -e "$d/libdl.so.2" ] && dl="$d/libdl.so.2" && break
done
[ -n "$dl" ] || fail "no libdl.so.2 to hide"
mv "$dl" "$dl.vgpu-hidden"
trap 'mv "$dl.vgpu-hidden" "$dl"' EXIT

# A plain program with libvgpu preloaded: the loader must not complain.
out=$(LD_PRELOAD=$LIB /bin/true 2>&1) || fail "/bin/true with libvgpu preloaded and no libdl.so.2: $out"
[ -z "$out" ] || fail "the loader says, with no libdl.so.2: $out"
# The limit holds: t_linked fails without libvgpu, so passing proves it was loaded.
env LD_PRELOAD="$LIB" LD_LIBRARY_PATH="$W/lib" NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-0000000000a0 \
	VGPU_MEMORY_LIMITS_MIB=1024 VGPU_REGION="$W/run/nodl.region" FAKE_CUDA_STATS="$W/run/nodl.stats" \
	"$W/t_linked" >/dev/null 2>"$W/run/nodl.err" || { cat "$W/run/nodl.err"; fail "t_linked without libdl.so.2"; }
id=$(od -An -t d4 -j 48 -N 4 "$W/run/nodl.region" 2>/dev/null | tr -d ' ' || true)
[ -z "$id" ] || [ "$id" -le 0 ] || ipcrm -s $((id - 1)) 2>/dev/null || true
echo "ok   no libdl.so.2 in the image ($dl hidden): programs start with libvgpu preloaded, and the 1 GiB limit holds"
