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
$CC $CFLAGS -fPIC -shared -o "$L/libprobe_next.so" "$HERE/probe_next.c" -ldl
$CC $CFLAGS -fPIC -shared -o "$L/libprobe_late.so" "$HERE/probe_next.c" -L"$L" -lcuda -ldl
for t in t_linked t_kinds t_hold t_fork t_launch bench feed_util t_cleanenv t_attack t_devices; do
	$CC $CFLAGS -o "$B/$t" "$HERE/$t.c" -L"$L" -lcuda -lnvidia-ml
done
for t in t_vmm t_exec t_slots t_watch; do
	$CC $CFLAGS -o "$B/$t" "$HERE/$t.c" -L"$L" -lcuda
done
$CC $CFLAGS -pthread -o "$B/t_race" "$HERE/t_race.c" -L"$L" -lcuda
$CC $CFLAGS -pthread -o "$B/t_share" "$HERE/t_share.c" "$HERE/fake/fake_common.c" -L"$L" -lcuda
$CC $CFLAGS -o "$B/t_runtime" "$HERE/t_runtime.c" -ldl
$CC $CFLAGS -o "$B/t_routes" "$HERE/t_routes.c" -L"$L" -lprobe_next -lcuda -ldl
$CC $CFLAGS -o "$B/t_dlmopen" "$HERE/t_dlmopen.c" -ldl
$CC $CFLAGS -rdynamic -o "$B/t_next" "$HERE/t_next.c" -L"$L" -lprobe_b -ldl
$CC $CFLAGS -o "$B/region_tool" "$HERE/region_tool.c"
# region_size: what a region file of this build measures.
REGION_SIZE=$("$B/region_tool" layout | awk '$1 == "region" { print $3 }')

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
		id=$(od -An -t d4 -j 48 -N 4 "$f" 2>/dev/null | tr -d ' ' || true) # a truncated region has none
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

# 2c. Every other route to the driver (class 2 of issue 13).
run routes -- "$B/t_routes" next >/dev/null 2>"$B/run/routes.err" || { cat "$B/run/routes.err"; fail "t_routes next"; }
[ ! -s "$B/run/routes.err" ] || { cat "$B/run/routes.err"; fail "routes: libvgpu wrote to stderr"; }
run routes-nolib LD_PRELOAD= -- "$B/t_routes" next >/dev/null 2>&1 && fail "t_routes next passes without libvgpu"
run heap -- "$B/t_routes" heap >/dev/null || fail "t_routes heap"
run heap-nolib LD_PRELOAD= -- "$B/t_routes" heap >/dev/null 2>&1 && fail "t_routes heap passes without libvgpu"
pass "2c dlsym/dlvsym(RTLD_NEXT) from linked and dlopened libraries, dlvsym on the driver: the hook, limits hold; malloc heap and legacy arrays counted"

# 2d. Pointers libvgpu does not know: the runtime's start-up lookups stay quiet, a call is loud when it escapes a set limit.
run unk-quiet FAKE_CUDA_UNKNOWN_PROCADDR=2 VGPU_CORE_LIMITS=30 -- "$B/t_routes" unknown >/dev/null 2>"$B/run/unk-quiet.err" \
	|| { cat "$B/run/unk-quiet.err"; fail "t_routes unknown"; }
[ ! -s "$B/run/unk-quiet.err" ] || { cat "$B/run/unk-quiet.err"; fail "unknown pointers: looking them up is not using them"; }
"$B/region_tool" read "$B/run/unk-quiet.region" | grep -qx 'header.flags=0' || fail "unknown pointers, lookups only: region marked"
for name in cuMemAlloc cuMemAllocFromPoolAsync cuMemAllocPitch cuLaunchKernelEx cuGraphLaunch; do
	run "unk-$name" FAKE_CUDA_UNKNOWN_PROCADDR=2 VGPU_CORE_LIMITS=30 -- "$B/t_routes" unknown $name >/dev/null 2>"$B/run/unk-$name.err" \
		|| { cat "$B/run/unk-$name.err"; fail "t_routes unknown $name"; }
	[ "$(grep -c "NOT hold.*$name" "$B/run/unk-$name.err")" = 1 ] && [ "$(wc -l <"$B/run/unk-$name.err")" = 1 ] \
		|| { cat "$B/run/unk-$name.err"; fail "calling an unknown $name: want one line naming it"; }
	"$B/region_tool" read "$B/run/unk-$name.region" | grep -qx 'header.reason=2' || fail "unknown $name: region reason"
done
run unk-nocore FAKE_CUDA_UNKNOWN_PROCADDR=2 -- "$B/t_routes" unknown cuLaunchKernelEx >/dev/null 2>"$B/run/unk-nocore.err"
[ ! -s "$B/run/unk-nocore.err" ] || fail "an unknown launch entry point with no cores limit escapes nothing: $(cat "$B/run/unk-nocore.err")"
run graph -- "$B/t_routes" graph >/dev/null 2>"$B/run/graph.err" && [ ! -s "$B/run/graph.err" ] || fail "a graph without allocation nodes: quiet"
run graph-alloc -- "$B/t_routes" graph alloc >/dev/null 2>"$B/run/graph-alloc.err"
[ "$(grep -c 'NOT hold.*memory allocation nodes' "$B/run/graph-alloc.err")" = 1 ] || { cat "$B/run/graph-alloc.err"; fail "graph with allocation nodes: want one line"; }
"$B/region_tool" read "$B/run/graph-alloc.region" | grep -qx 'header.reason=7' || fail "graph with allocation nodes: region reason"
if [ "$CC" != musl-gcc ]; then
	run dlmopen -- "$B/t_dlmopen" >/dev/null 2>"$B/run/dlmopen.err" || { cat "$B/run/dlmopen.err"; fail "t_dlmopen"; }
	[ "$(grep -c 'NOT hold.*cuMemAlloc_v2' "$B/run/dlmopen.err")" = 1 ] || { cat "$B/run/dlmopen.err"; fail "a driver in a new namespace: want one line naming cuMemAlloc_v2"; }
fi
pass "2d unknown driver pointers (pool, pitch, LaunchKernelEx, graph launch, alloc): quiet when looked up, one line when called under a limit; graphs with allocation nodes loud; a second driver copy (dlmopen) loud when used"

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
run_bg closefds -- "$B/t_exec" closefds >"$B/run/closefds.out"
closer=$BG_PID
for _ in $(seq 100); do [ -s "$B/run/closefds.out" ] && break; sleep 0.05; done
sleep 0.2
[ "$(run closefds -- "$B/t_hold" 600)" = oom ] || { kill "$closer"; fail "a live process that closed its descriptors lost its 600 MiB from the ledger"; }
{ kill "$closer"; wait "$closer"; } 2>/dev/null || true
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
pass "ledger exec (itself, or a program without libvgpu) keeps no old usage; closing every descriptor loses nothing; kill -9 back for a neighbour in $ms ms; $(sed 's/PASS t_slots //' "$B/run/slots.out"), $unslotted without a slot said so"

# Issue class 9. Limits come from the limits file beside libvgpu, whatever the environment
# (docs/contract.md#where-limits-come-from). mklimits NAME LINE...: a copy of
# libvgpu in a directory of its own with a limits file beside it, as the
# device plugin mounts them; prints the library's path.
mklimits() {
	local d=$B/run/$1.vgpu; shift
	mkdir -p "$d" && cp "$LIB" "$d/libvgpu.so"
	printf '%s\n' "# written by run.sh" "$@" >"$d/limits"
	echo "$d/libvgpu.so"
}
# The file the device plugin writes (lib/contract keeps testdata/limits equal
# to its output), with the region moved under this run's directory.
F9=$(mklimits file) && sed "s|^VGPU_REGION=.*|VGPU_REGION=$B/run/file.region|" "$HERE/testdata/limits" >"${F9%/*}/limits"
grep -qx "NVIDIA_VISIBLE_DEVICES=$UUID0" "${F9%/*}/limits" || fail "class 9: testdata/limits must name $UUID0"
run clean LD_PRELOAD="$F9" -- "$B/t_cleanenv" >"$B/run/clean.out" 2>"$B/run/clean.err" \
	|| { cat "$B/run/clean.err"; fail "class 9: a child with a clean environment escaped the limits file"; }
[ ! -s "$B/run/clean.err" ] || { cat "$B/run/clean.err"; fail "class 9: libvgpu wrote to stderr with limits enforced from the file"; }
[ -s "$B/run/file.region" ] && [ ! -e "$B/run/clean.region" ] || fail "class 9: the region must be the one the limits file names"
[ "$(run widen LD_PRELOAD="$F9" VGPU_MEMORY_LIMITS_MIB=8192 VGPU_REGION="$B/run/widen.region" -- "$B/t_hold" 2000)" = oom ] \
	|| fail "class 9: VGPU_MEMORY_LIMITS_MIB=8192 in the environment widened the file's 1 GiB"
run rewrite LD_PRELOAD="$F9" -- "$B/t_attack" rewrite "$B/run/file.region" 2048 >/dev/null \
	|| fail "class 9: zeroing the region's limit fields lifted the limit (limits file)"
run rewrite-env -- "$B/t_attack" rewrite "$B/run/rewrite-env.region" 2048 >/dev/null \
	|| fail "class 9: zeroing the region's limit fields lifted the limit (environment)"
F9v=$(mklimits badversion VGPU_LIMITS_VERSION=2 NVIDIA_VISIBLE_DEVICES=$UUID0 VGPU_MEMORY_LIMITS_MIB=1024)
run badversion LD_PRELOAD="$F9v" -- "$B/t_hold" 100 >/dev/null 2>"$B/run/badversion.err" || fail "class 9: bad limits file: the program failed"
[ "$(wc -l <"$B/run/badversion.err")" = 1 ] && grep -q 'NOT enforced.*limits file' "$B/run/badversion.err" \
	|| { cat "$B/run/badversion.err"; fail "class 9: a limits file of another version: want one line naming it"; }
# Blank lines, indentation and CRLF line ends do not lose an entry.
F9b=$(mklimits spaced "" "  VGPU_LIMITS_VERSION=1"$'\r' "" "NVIDIA_VISIBLE_DEVICES=$UUID0"$'\r' "" \
	"VGPU_MEMORY_LIMITS_MIB=1024 "$'\r' "VGPU_REGION=$B/run/spaced.region"$'\r')
[ "$(run spaced LD_PRELOAD="$F9b" VGPU_MEMORY_LIMITS_MIB= -- "$B/t_hold" 2000 2>"$B/run/spaced.err")" = oom ] \
	&& [ ! -s "$B/run/spaced.err" ] || { cat "$B/run/spaced.err"; fail "class 9: a limits file with blank lines and CRLF lost its limit"; }
# The mounts as the device plugin returns them (docs/contract.md#mounts): the
# library directory read-only with the empty placeholder, the container's
# limits file mounted read-only over it. Even root cannot rewrite it.
if unshare -rm true 2>/dev/null; then
	mkdir -p "$B/run/mnt/hostlib" "$B/run/mnt/ctr/vgpu"
	cp "$LIB" "$B/run/mnt/hostlib/libvgpu.so" && : >"$B/run/mnt/hostlib/limits"
	cp "${F9%/*}/limits" "$B/run/mnt/host.limits"
	unshare -rm bash -s "$B" <<'EOS' >"$B/run/mnt.out" 2>&1 || { cat "$B/run/mnt.out"; fail "class 9: the mounted limits file"; }
set -eu
b=$1 c=$1/run/mnt/ctr/vgpu
mount --bind "$b/run/mnt/hostlib" "$c" && mount -o remount,bind,ro "$c"
mount --bind "$b/run/mnt/host.limits" "$c/limits" && mount -o remount,bind,ro "$c/limits"
if (echo "VGPU_MEMORY_LIMITS_MIB=8192" >>"$c/limits") 2>/dev/null; then echo "root in the container rewrote the limits file"; exit 1; fi
env LD_PRELOAD="$c/libvgpu.so" LD_LIBRARY_PATH="$b/lib" FAKE_CUDA_STATS="$b/run/mnt.stats" "$b/t_cleanenv"
EOS
	mounted="; mounted as the plugin does, root cannot rewrite it"
else
	mounted="; mounts: SKIPPED, no user or mount namespace here"
fi
pass "class 9: limits from the file beside libvgpu: a clean-environment child is held, env cannot widen, rewriting the region's limits changes nothing$mounted"

# Issue class 4. The region cannot kill the application: a process attaching after the
# region was truncated and a region on a full filesystem both run, and say so.
run_bg shrink -- "$B/t_hold" 300 hold >"$B/run/shrink-hold.out"
shrinker=$BG_PID
for _ in $(seq 100); do [ -s "$B/run/shrink-hold.out" ] && break; sleep 0.05; done
shrink_sem=$(od -An -t d4 -j 48 -N 4 "$B/run/shrink.region" | tr -d ' ') # lost with the truncation
"$B/t_attack" truncate "$B/run/shrink.region" 0
out=$(run shrink -- "$B/t_hold" 100 2>"$B/run/shrink.err") || { cat "$B/run/shrink.err"; fail "class 4: a truncated region killed the next process"; }
{ kill "$shrinker"; wait "$shrinker"; } 2>/dev/null || true
[ "$shrink_sem" -le 0 ] || ipcrm -s $((shrink_sem - 1)) 2>/dev/null || true
[ "$out" = ok ] && [ "$(wc -l <"$B/run/shrink.err")" = 1 ] && grep -q 'unusable' "$B/run/shrink.err" \
	|| { cat "$B/run/shrink.err"; fail "class 4: truncated region: want ok and one line saying the region is unusable"; }
[ "$(stat -c %s "$B/run/shrink.region")" = 0 ] || fail "class 4: a truncated region must not be silently re-created (the holder's 300 MiB would be forgotten)"
if unshare -rm true 2>/dev/null; then
	mkdir -p "$B/run/full"
	unshare -rm bash -s "$B" "$LIB" "$UUID0" "$REGION_SIZE" <<'EOS' || fail "class 4: full filesystem: the test script failed"
set -u
b=$1 lib=$2 uuid=$3 size=$4
mount -t tmpfs -o size=256k tmpfs "$b/run/full" || exit 1
head -c "$size" /dev/zero >"$b/run/full/precreated" # what the device plugin does at Allocate
"$b/t_attack" fill "$b/run/full"
for r in sparse precreated; do
	env LD_PRELOAD="$lib" LD_LIBRARY_PATH="$b/lib" NVIDIA_VISIBLE_DEVICES="$uuid" VGPU_MEMORY_LIMITS_MIB=1024 \
		VGPU_REGION="$b/run/full/$r" "$b/t_hold" 100 >"$b/run/full-$r.out" 2>"$b/run/full-$r.err"
	echo $? >"$b/run/full-$r.rc"
	"$b/region_tool" read "$b/run/full/$r" >"$b/run/full-$r.fields" 2>/dev/null
	id=$(sed -n 's/^header.live_sem=//p' "$b/run/full-$r.fields")
	[ -z "$id" ] || [ "$id" -le 0 ] || ipcrm -s $((id - 1)) 2>/dev/null # the tmpfs goes, the semaphore would stay
done
EOS
	[ "$(cat "$B/run/full-sparse.rc")" = 0 ] && [ "$(cat "$B/run/full-sparse.out")" = ok ] \
		|| { cat "$B/run/full-sparse.err"; fail "class 4: full filesystem: creating the region killed the process (rc $(cat "$B/run/full-sparse.rc"))"; }
	[ "$(wc -l <"$B/run/full-sparse.err")" = 1 ] && grep -q 'unusable' "$B/run/full-sparse.err" \
		|| { cat "$B/run/full-sparse.err"; fail "class 4: full filesystem: want one line saying the region is unusable"; }
	[ "$(cat "$B/run/full-precreated.rc")" = 0 ] && [ ! -s "$B/run/full-precreated.err" ] \
		&& grep -qx 'header.device_count=1' "$B/run/full-precreated.fields" \
		|| { cat "$B/run/full-precreated.err"; fail "class 4: full filesystem: a pre-created region must work, silently"; }
	pass "class 4: truncated region: the next process runs and says so once; full filesystem: no SIGBUS, a pre-created region works"
else
	pass "class 4: truncated region: the next process runs and says so once (full filesystem: SKIPPED, no user or mount namespace here)"
fi

# Issue class 5. Identities: uuids match in any case; a GPU with no limits entry, or a
# damaged entry, is loud and recorded, and the valid entries still hold.
UP0=$(echo "$UUID0" | tr a-f A-F)
[ "$(run upper NVIDIA_VISIBLE_DEVICES="$UP0" -- "$B/t_devices" 2000 2>"$B/run/upper.err")" = "0:oom" ] \
	|| fail "class 5: an upper-case uuid in NVIDIA_VISIBLE_DEVICES left the GPU unlimited"
[ ! -s "$B/run/upper.err" ] || { cat "$B/run/upper.err"; fail "class 5: upper-case uuid: want silence"; }
# check5 NAME WANT-STDOUT ENV...: one line naming what does not hold, region marked.
check5() {
	local name=$1 want=$2; shift 2
	local got
	got=$(run "$name" FAKE_CUDA_DEVICES=2 "$@" -- "$B/t_devices" 2000 2>"$B/run/$name.err")
	[ "$got" = "$want" ] || fail "class 5: $name: devices gave '$got', want '$want'"
	[ "$(wc -l <"$B/run/$name.err")" = 1 ] && grep -q 'NOT' "$B/run/$name.err" \
		|| { cat "$B/run/$name.err"; fail "class 5: $name: want one line saying what is not limited"; }
	"$B/region_tool" read "$B/run/$name.region" | grep -qx 'header.flags=1' || fail "class 5: $name: region not marked unenforced"
}
check5 foreign "0:ok 1:ok" NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-0000000000ff VGPU_MEMORY_LIMITS_MIB=1024
"$B/region_tool" read "$B/run/foreign.region" | grep -qx 'header.reason=6' || fail "class 5: foreign uuid: want reason 6 (unlimited-device)"
check5 unlisted "0:oom 1:ok" NVIDIA_VISIBLE_DEVICES=$UUID0
check5 damaged "0:oom 1:ok" NVIDIA_VISIBLE_DEVICES=$UUID0,$UUID1 VGPU_MEMORY_LIMITS_MIB=1024,lots
grep -q '"lots"' "$B/run/damaged.err" || fail "class 5: damaged list: the line must name the bad entry"
check5 short "0:oom 1:ok" NVIDIA_VISIBLE_DEVICES=$UUID0,$UUID1 VGPU_MEMORY_LIMITS_MIB=1024
check5 reversed "0:ok 1:oom" NVIDIA_VISIBLE_DEVICES=$UUID1,$UUID0 VGPU_MEMORY_LIMITS_MIB=1024,many
[ "$(run spaces FAKE_CUDA_DEVICES=2 NVIDIA_VISIBLE_DEVICES="$UUID1, $UUID0" VGPU_MEMORY_LIMITS_MIB=" 1024 , 512" \
	-- "$B/t_devices" 800 2>"$B/run/spaces.err")" = "0:oom 1:ok" ] && [ ! -s "$B/run/spaces.err" ] \
	|| { cat "$B/run/spaces.err"; fail "class 5: spaces around list entries lost a limit"; }
pass "class 5: uuids match in any case; foreign, unlisted, damaged and short entries: valid limits hold, one line, region marked"

# Issue class 7. Messages say exactly what holds: no region and a cores limit means
# memory per process only and compute not at all.
run msg7 VGPU_REGION= VGPU_CORE_LIMITS=30 -- "$B/t_hold" 100 >/dev/null 2>"$B/run/msg7.err"
[ "$(wc -l <"$B/run/msg7.err")" = 1 ] && grep -q 'memory limits hold in each process separately' "$B/run/msg7.err" \
	&& grep -q 'compute limits are NOT enforced' "$B/run/msg7.err" \
	|| { cat "$B/run/msg7.err"; fail "class 7: no region with a cores limit: the line must say memory holds per process and compute does not"; }
run msg7b VGPU_MEMORY_LIMITS_MIB=lots VGPU_CORE_LIMITS=30 -- "$B/t_hold" 100 >/dev/null 2>"$B/run/msg7b.err"
grep -q 'memory is NOT limited' "$B/run/msg7b.err" && grep -q 'compute limits hold' "$B/run/msg7b.err" \
	|| { cat "$B/run/msg7b.err"; fail "class 7: a bad memory list with a valid cores limit: the line must say memory is not limited and compute holds"; }
run msg7c VGPU_CORE_LIMITS=thirty -- "$B/t_hold" 100 >/dev/null 2>"$B/run/msg7c.err"
grep -q 'memory limits hold for the whole container' "$B/run/msg7c.err" && grep -q 'compute is NOT limited' "$B/run/msg7c.err" \
	|| { cat "$B/run/msg7c.err"; fail "class 7: a bad cores list with a valid memory limit: the line must say memory holds and compute is not limited"; }
pass "class 7: every line says what holds and what does not"

# Never silent: a bad env or an unknown driver prints one line and marks the region.
run badenv VGPU_MEMORY_LIMITS_MIB=lots -- "$B/t_hold" 100 >/dev/null 2>"$B/run/badenv.err" || true
[ "$(grep -c 'NOT enforced' "$B/run/badenv.err")" = 1 ] && [ "$(wc -l <"$B/run/badenv.err")" = 1 ] \
	|| { cat "$B/run/badenv.err"; fail "bad env: want exactly one stderr line"; }
"$B/region_tool" read "$B/run/badenv.region" | grep -qx 'header.flags=1' || fail "bad env: region not marked unenforced"
run unknown FAKE_CUDA_UNKNOWN_PROCADDR=1 -- "$B/t_routes" unknown cuMemAlloc >/dev/null 2>"$B/run/unknown.err"
[ "$(grep -c 'NOT hold for every call' "$B/run/unknown.err")" = 1 ] || { cat "$B/run/unknown.err"; fail "unknown driver: want one line"; }
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
	# 6b. Long kernels and graph launches (class 3): a representative subset; make bench-libvgpu runs the matrix.
	"$HERE/share.sh" "$LIB" "$B" "${SHARE_CASES:-100:kernel:30 200000:graph:60 500000:kernel:30}" >"$B/run/share.txt" \
		|| { cat "$B/run/share.txt"; fail "compute share"; }
	sed 's/^ok   /     /' "$B/run/share.txt"
	pass "6b compute share holds ± 5 points for 100 us kernels at 30%, 200 ms graphs at 60%, 500 ms kernels at 30%"
fi
echo "libvgpu suite: $n checks passed ($CC, $(basename "$LIB"))"
