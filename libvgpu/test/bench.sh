#!/bin/bash
# make bench: what libvgpu adds to a cuLaunchKernel and to a cuMemAlloc_v2 +
# cuMemFree_v2 pair, with the fake driver (zero-time kernels), best of 5; then
# the compute share (class 3 of issue 13) over the whole matrix: kernels and
# graph launches of 10 us to 2 s at 30 % and 60 % (about 3 minutes).
#   bench.sh LIBVGPU WORKDIR
set -eu -o pipefail
LIB=$(readlink -f "$1")
W=$2
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$W" && mkdir -p "$W/lib"
CFLAGS="-O2 -Wall -I$HERE/../include"
gcc $CFLAGS -fPIC -shared -fvisibility=hidden -Wl,-Bsymbolic -Wl,-soname,libcuda.so.1 \
	-o "$W/lib/libcuda.so.1" "$HERE/fake/fake_cuda.c" "$HERE/fake/fake_common.c"
gcc $CFLAGS -fPIC -shared -fvisibility=hidden -Wl,-Bsymbolic -Wl,-soname,libnvidia-ml.so.1 \
	-o "$W/lib/libnvidia-ml.so.1" "$HERE/fake/fake_nvml.c" "$HERE/fake/fake_common.c"
ln -sf libcuda.so.1 "$W/lib/libcuda.so"
ln -sf libnvidia-ml.so.1 "$W/lib/libnvidia-ml.so"
gcc $CFLAGS -o "$W/bench" "$HERE/bench.c" -L"$W/lib" -lcuda
gcc $CFLAGS -o "$W/feed_util" "$HERE/feed_util.c" -L"$W/lib" -lnvidia-ml
gcc $CFLAGS -pthread -o "$W/t_share" "$HERE/t_share.c" "$HERE/fake/fake_common.c" -L"$W/lib" -lcuda
mkdir -p "$W/run"
export LD_LIBRARY_PATH=$W/lib NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-0000000000a0

read -r l0 a0 < <("$W/bench")
read -r l1 a1 < <(LD_PRELOAD=$LIB "$W/bench")
read -r l2 a2 < <(LD_PRELOAD=$LIB VGPU_MEMORY_LIMITS_MIB=4096 VGPU_REGION=$W/r2 "$W/bench")
read -r l3 _ < <(LD_PRELOAD=$LIB VGPU_MEMORY_LIMITS_MIB=4096 VGPU_CORE_LIMITS=30 VGPU_REGION=$W/r3 BENCH_PACE=1 "$W/bench")
d() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", a - b }'; }
printf 'libvgpu bench (fake driver, ns per call, best of 5)       driver  +libvgpu  added  target\n'
printf '  cuLaunchKernel, no limit                                %7.1f  %8.1f  %5s  < 50\n' "$l0" "$l1" "$(d "$l1" "$l0")"
printf '  cuLaunchKernel, memory limit only                       %7.1f  %8.1f  %5s  < 50\n' "$l0" "$l2" "$(d "$l2" "$l0")"
printf '  cuLaunchKernel, 30%% cores limit (pacing, no sleep)      %7.1f  %8.1f  %5s  < 150\n' "$l0" "$l3" "$(d "$l3" "$l0")"
printf '  cuMemAlloc_v2 + cuMemFree_v2, no limit                  %7.1f  %8.1f  %5s\n' "$a0" "$a1" "$(d "$a1" "$a0")"
printf '  cuMemAlloc_v2 + cuMemFree_v2, 4 GiB limit               %7.1f  %8.1f  %5s  < 1000\n' "$a0" "$a2" "$(d "$a2" "$a0")"

if [ "${BENCH_SHARE:-1}" = 1 ]; then
	echo "compute share (busy fraction of wall time, fake GPU, monitor feed every 100 ms; want share ± 0.05):"
	long= short=
	for pct in 30 60; do
		for kind in kernel graph; do
			for us in 10 1000 20000; do short+=" $us:$kind:$pct"; done
			for us in 200000 1000000 2000000; do long+=" $us:$kind:$pct"; done
		done
		long+=" 200000:kernel:$pct:4 1000000:graph:$pct:4"
	done
	# Long kernels sleep: all at once. Short ones keep a core busy: two at a time.
	rc=0
	"$HERE/share.sh" "$LIB" "$W" "$long" 12 | sort -t% -k1,1 || rc=1
	"$HERE/share.sh" "$LIB" "$W" "$short" 2 || rc=1
	exit $rc
fi