#!/bin/bash
# libvgpu's test suite without a GPU: builds the fake driver, the fake NVML
# and the test programs with CC, then runs them against LIBVGPU.
#   run.sh LIBVGPU WORKDIR [CC]
# Used as is on the build host, inside the glibc chroots and with musl-gcc,
# always against the same libvgpu.so.
set -eu -o pipefail
LIB=$(readlink -f "$1")
W=$2
CC=${3:-gcc}
HERE=$(cd "$(dirname "$0")" && pwd)
SKIP_THROTTLE=${SKIP_THROTTLE:-0}

rm -rf "$W" && mkdir -p "$W/lib" "$W/run"
B=$W; L=$W/lib
CFLAGS="-O2 -g -Wall -I$HERE/../include"
$CC $CFLAGS -fPIC -shared -pthread -fvisibility=hidden -Wl,-Bsymbolic -Wl,-soname,libcuda.so.1 \
	-o "$L/libcuda.so.1" "$HERE/fake/fake_cuda.c" "$HERE/fake/fake_common.c"
$CC $CFLAGS -fPIC -shared -fvisibility=hidden -Wl,-Bsymbolic -Wl,-soname,libnvidia-ml.so.1 \
	-o "$L/libnvidia-ml.so.1" "$HERE/fake/fake_nvml.c" "$HERE/fake/fake_common.c"
ln -sf libcuda.so.1 "$L/libcuda.so"
ln -sf libnvidia-ml.so.1 "$L/libnvidia-ml.so"
$CC $CFLAGS -fPIC -shared -o "$L/libprobe_a.so" "$HERE/probe_a.c"
$CC $CFLAGS -fPIC -shared -o "$L/libprobe_b.so" "$HERE/probe_b.c"
for t in t_linked t_kinds t_hold t_fork t_launch bench feed_util; do
	$CC $CFLAGS -o "$B/$t" "$HERE/$t.c" -L"$L" -lcuda -lnvidia-ml
done
for t in t_vmm t_exec t_slots t_watch; do
	$CC $CFLAGS -o "$B/$t" "$HERE/$t.c" -L"$L" -lcuda
done
$CC $CFLAGS -pthread -o "$B/t_race" "$HERE/t_race.c" -L"$L" -lcuda
$CC $CFLAGS -o "$B/t_runtime" "$HERE/t_runtime.c" -ldl
$CC $CFLAGS -rdynamic -o "$B/t_next" "$HERE/t_next.c" -L"$L" -lprobe_b -ldl
$CC $CFLAGS -o "$B/region_tool" "$HERE/region_tool.c"

export LD_LIBRARY_PATH=$L
UUID0=GPU-00000000-0000-0000-0000-0000000000a0
UUID1=GPU-00000000-0000-0000-0000-0000000000a1
n=0
# run NAME [VAR=VALUE...] -- COMMAND...: a fresh region and fake GPU per test.
# Execs, so that a backgrounded run's $! is the test program itself.
run() {
	local name=$1; shift
	local envs=(LD_PRELOAD="$LIB" VGPU_REGION="$B/run/$name.region" FAKE_CUDA_STATS="$B/run/$name.stats"
		NVIDIA_VISIBLE_DEVICES=$UUID0 VGPU_MEMORY_LIMITS_MIB=1024)
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	(exec env "${envs[@]}" "$@")
}
# Like run, in the background; sets BG_PID.
run_bg() {
	local name=$1; shift
	local envs=(LD_PRELOAD="$LIB" VGPU_REGION="$B/run/$name.region" FAKE_CUDA_STATS="$B/run/$name.stats"
		NVIDIA_VISIBLE_DEVICES=$UUID0 VGPU_MEMORY_LIMITS_MIB=1024)
	while [ "$1" != -- ]; do envs+=("$1"); shift; done
	shift
	env "${envs[@]}" "$@" &
	BG_PID=$!
}
# The regions' live-process semaphores (SysV, IPC_PRIVATE) would outlive the suite on this host.
remove_semaphores() {
	for f in "$B"/run/*.region; do
		id=$(od -An -t d4 -j 48 -N 4 "$f" 2>/dev/null | tr -d ' ')
		[ -z "$id" ] || [ "$id" -le 0 ] || ipcrm -s $((id - 1)) 2>/dev/null || true
	done
}
trap remove_semaphores EXIT
pass() { n=$((n + 1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }

# 1. -lcuda under a 1 GiB limit; quiet by default; without libvgpu the same program fails.
run linked -- "$B/t_linked" >/dev/null 2>"$B/run/linked.err" || { cat "$B/run/linked.err"; fail "t_linked"; }
[ ! -s "$B/run/linked.err" ] || { cat "$B/run/linked.err"; fail "libvgpu wrote to stderr with limits enforced"; }
run linked-nolib LD_PRELOAD= -- "$B/t_linked" >/dev/null 2>&1 && fail "t_linked passes without libvgpu: it proves nothing"
pass "1 linked -lcuda: 900 MiB ok, 200 MiB more OOM, ok after free; pitch, managed, v1, arrays, NVML (and fails without libvgpu)"

# 1b. Devices are matched by uuid, not by position.
run uuid FAKE_CUDA_DEVICES=2 NVIDIA_VISIBLE_DEVICES=$UUID1,$UUID0 VGPU_MEMORY_LIMITS_MIB=4096,1024 -- "$B/t_linked" >/dev/null \
	|| fail "limits follow NVIDIA_VISIBLE_DEVICES uuids"
pass "1b the limit of each device follows its uuid in NVIDIA_VISIBLE_DEVICES"

# 2. The runtime's path: dlopen + cuGetProcAddress(_v2), versioned and _ptsz variants.
run runtime -- "$B/t_runtime" >/dev/null || fail "t_runtime"
run runtime-nolib LD_PRELOAD= -- "$B/t_runtime" >/dev/null 2>&1 && fail "t_runtime passes without libvgpu"
run next LD_PRELOAD="$L/libprobe_a.so $LIB" -- "$B/t_next" >/dev/null || fail "t_next"
pass "2 dlopen + cuGetProcAddress_v2: exact-variant hooks (_v2, v1, _ptsz), others untouched, limits hold; RTLD_NEXT keeps the caller"

# 3. Async, pools, VMM.
run kinds -- "$B/t_kinds" >/dev/null || fail "t_kinds"
pass "3 cuMemAllocAsync, cuMemAllocFromPoolAsync, cuMemCreate/cuMemRelease all counted"

# 4. Three processes share the limit; kill -9 gives the memory back.
pids=()
for i in 1 2 3; do
	run_bg multi -- "$B/t_hold" 300 hold >"$B/run/hold$i.out"
	pids+=("$BG_PID")
done
for i in 1 2 3; do
	for _ in $(seq 100); do [ -s "$B/run/hold$i.out" ] && break; sleep 0.05; done
	[ "$(cat "$B/run/hold$i.out")" = ok ] || fail "holder $i: $(cat "$B/run/hold$i.out")"
done
[ "$(run multi -- "$B/t_hold" 200)" = oom ] || fail "a 4th process got 200 MiB beyond 3 x 300 MiB of a 1 GiB limit"
exec 3>&2 2>/dev/null # bash reports killed jobs on its own stderr
kill -9 "${pids[1]}"; wait "${pids[1]}" || true
exec 2>&3
[ "$(run multi -- "$B/t_hold" 200)" = ok ] || fail "memory of the killed process was not reclaimed"
[ "$(run multi -- "$B/t_hold" 500)" = oom ] || fail "the 2 live holders no longer count"
exec 2>/dev/null
kill -9 "${pids[0]}" "${pids[2]}"; wait || true
exec 2>&3
[ "$(run multi -- "$B/t_hold" 1000)" = ok ] || fail "all memory back after every holder is killed"
pass "4 three processes share one 1 GiB limit; kill -9 returns the dead one's 300 MiB"

# 4b. Reservations are atomic: 3 processes x 4 threads racing for 64 KiB blocks get exactly 1 GiB.
for i in 1 2 3; do run_bg race -- "$B/t_race" 4 2 "$B/run/race.go" >"$B/run/race$i.out"; done
sleep 0.5; touch "$B/run/race.go"
wait
total=$(cat "$B/run"/race?.out | awk '{ s += $1 } END { print s }')
[ "$total" = 16384 ] || fail "racing processes got $total blocks of 64 KiB under a 1 GiB limit, want exactly 16384 ($(cat "$B/run"/race?.out | tr '\n' ' '))"
pass "4b 3 processes x 4 threads racing: exactly 16384 x 64 KiB blocks granted under 1 GiB ($(cat "$B/run"/race?.out | paste -sd+))"

# 5. fork, then CUDA in the child.
run fork -- "$B/t_fork" >/dev/null || fail "t_fork"
pass "5 fork: the child's allocations count with the parent's and come back when it is gone"

# VMM memory (issue 13, class 1): counted while any handle or mapping holds it, in any process.
run vmm -- "$B/t_vmm" local >/dev/null || fail "t_vmm local"
run vmm1 FAKE_CUDA_EXPORT_ONE_FILE=1 -- "$B/t_vmm" ambiguous >/dev/null || fail "t_vmm ambiguous"
run_bg vmmx -- "$B/t_vmm" export >"$B/run/vmmx.out"
exporter=$BG_PID
for _ in $(seq 100); do grep -q exporter-done "$B/run/vmmx.out" 2>/dev/null && break; sleep 0.05; done
importer=$(awk '/exporter-done/ { print $2 }' "$B/run/vmmx.out")
[ -n "$importer" ] || { kill -9 "$exporter"; fail "t_vmm export: $(cat "$B/run/vmmx.out")"; }
exec 3>&2 2>/dev/null
kill -9 "$exporter"; wait "$exporter" || true
exec 2>&3
[ "$(run vmmx -- "$B/t_hold" 600)" = oom ] || { kill -9 "$importer"; fail "the killed exporter's 512 MiB were given back while another process maps them"; }
[ "$(run vmmx -- "$B/t_hold" 500)" = ok ] || { kill -9 "$importer"; fail "an imported allocation is counted twice"; }
kill -9 "$importer"
[ "$(run vmmx -- "$B/t_watch" 1024)" != timeout ] || fail "the importer's memory was not given back after it was killed"
pass "vmm VMM: mapped memory counts after cuMemRelease, retained handles, one unmap over many mappings; exported memory counted once across processes, kept while an importer maps it after the exporter is killed, also when every export is a descriptor of one file"

# The ledger does not leak (issue 13, class 6).
run exec -- "$B/t_exec" >/dev/null || fail "t_exec: a process that execs itself keeps its old image's memory"
run_bg exec2 -- "$B/t_exec" other >"$B/run/exec2.out"
sleeper=$BG_PID
for _ in $(seq 100); do [ -s "$B/run/exec2.out" ] && break; sleep 0.05; done
[ "$(run exec2 -- "$B/t_watch" 1024)" != timeout ] || { kill "$sleeper"; fail "a process that exec'd a program without libvgpu keeps its old image's memory"; }
kill "$sleeper"; wait "$sleeper" 2>/dev/null || true
run_bg reclaim -- "$B/t_hold" 700 hold >"$B/run/reclaim.out"
holder=$BG_PID
for _ in $(seq 100); do [ -s "$B/run/reclaim.out" ] && break; sleep 0.05; done
run_bg reclaim -- "$B/t_watch" 1024 >"$B/run/watch.out"
watcher=$BG_PID
sleep 0.3
t0=$(date +%s%N)
exec 3>&2 2>/dev/null
kill -9 "$holder"; wait "$holder" || true
exec 2>&3
wait "$watcher" || fail "a neighbour never saw the killed process's 700 MiB come back"
ms=$(( ($(cat "$B/run/watch.out") - t0) / 1000000 ))
[ "$ms" -le 1000 ] || fail "a neighbour's cuMemGetInfo saw the killed process's memory back after $ms ms, want <= 1000"
run slots VGPU_MEMORY_LIMITS_MIB=2048 -- "$B/t_slots" 8 1 >"$B/run/slots.out" 2>"$B/run/slots.err" \
	|| { cat "$B/run/slots.err" | sort | uniq -c | head; fail "t_slots"; }
unslotted=$("$B/region_tool" read "$B/run/slots.region" | sed -n 's/^header.unslotted=//p')
lines=$(grep -c 'no process slot' "$B/run/slots.err" || true)
[ "$unslotted" -ge 8 ] && [ "$lines" = "$unslotted" ] \
	|| fail "processes beyond the slot table: $unslotted recorded in the region, $lines stderr lines, want >= 8 and equal"
pass "ledger exec (itself, or a program without libvgpu) keeps no old usage; kill -9 back for a neighbour in $ms ms; $(sed 's/PASS t_slots //' "$B/run/slots.out"), $unslotted without a slot said so"

# Never silent: a bad env or an unknown driver prints one line and marks the region.
run badenv VGPU_MEMORY_LIMITS_MIB=lots -- "$B/t_hold" 100 >/dev/null 2>"$B/run/badenv.err" || true
[ "$(grep -c 'NOT enforced' "$B/run/badenv.err")" = 1 ] && [ "$(wc -l <"$B/run/badenv.err")" = 1 ] \
	|| { cat "$B/run/badenv.err"; fail "bad env: want exactly one stderr line"; }
"$B/region_tool" read "$B/run/badenv.region" | grep -qx 'header.flags=1' || fail "bad env: region not marked unenforced"
run unknown FAKE_CUDA_UNKNOWN_PROCADDR=1 -- "$B/t_runtime" >/dev/null 2>"$B/run/unknown.err" && fail "unknown driver: limits claimed"
[ "$(grep -c 'NOT enforced' "$B/run/unknown.err")" = 1 ] || { cat "$B/run/unknown.err"; fail "unknown driver: want one line"; }
"$B/region_tool" read "$B/run/unknown.region" | grep -qx 'header.reason=2' || fail "unknown driver: region reason"
run noregion VGPU_REGION= -- "$B/t_hold" 100 >/dev/null 2>"$B/run/noregion.err"
[ "$(wc -l <"$B/run/noregion.err")" = 1 ] || fail "no region: want one line"
run nolimit VGPU_MEMORY_LIMITS_MIB= -- "$B/t_hold" 100 >/dev/null 2>"$B/run/nolimit.err"
[ ! -e "$B/run/nolimit.region" ] && [ ! -s "$B/run/nolimit.err" ] || fail "no limits: libvgpu must stay out of the way"
pass "unenforceable (bad env, unknown driver, no region): one stderr line, region marked; no limits: untouched"

# 6. A 30 % cores limit, fed by the utilisation the monitor publishes.
if [ "$SKIP_THROTTLE" != 1 ]; then
	# Both loops run at once, on separate fake GPUs, so that they see the same machine load.
	run_bg throttle LD_PRELOAD= -- "$B/feed_util" "$B/run/throttle.region" 100
	feeder=$BG_PID
	run_bg tbase VGPU_MEMORY_LIMITS_MIB= -- "$B/t_launch" 1000 1.5 4 >"$B/run/tbase.out"
	basepid=$BG_PID
	lim=$(run throttle VGPU_CORE_LIMITS=30 -- "$B/t_launch" 1000 1.5 4)
	wait "$basepid"
	base=$(cat "$B/run/tbase.out")
	{ kill "$feeder"; wait "$feeder"; } 2>/dev/null || true
	ratio=$(awk -v a="$lim" -v b="$base" 'BEGIN { printf "%.3f", a / b }')
	awk -v r="$ratio" 'BEGIN { exit !(r >= 0.25 && r <= 0.35) }' \
		|| fail "30% cores: launch rate $lim/s vs $base/s unthrottled = $ratio, want 0.25-0.35"
	pass "6 30% cores: $lim launches/s vs $base/s unthrottled, ratio $ratio"
fi
echo "libvgpu suite: $n checks passed ($CC, $(basename "$LIB"))"
