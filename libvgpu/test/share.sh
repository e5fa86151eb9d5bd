#!/bin/bash
# Class 3: the compute share holds (± 5 points) for kernels and graph launches
# of any length: each case runs t_share with its own fake GPU and utilisation
# feed, several cases at once (long kernels cost no CPU).
#   share.sh LIBVGPU BUILD_DIR "US:KIND:SHARE[:THREADS] ..." [PARALLEL]
# BUILD_DIR is run.sh's work directory (t_share, feed_util, the fake driver).
set -eu -o pipefail
LIB=$(readlink -f "$1")
B=$2
CASES=$3
PAR=${4:-4}
export LD_LIBRARY_PATH=$B/lib
rc=0
run_case() {
	local us=$1 kind=$2 pct=$3 threads=${4:-1} name="share-$1-$2-$3-${4:-1}"
	local region=$B/run/$name.region
	rm -f "$region" "$B/run/$name.stats"
	env FAKE_CUDA_STATS="$B/run/$name.stats" "$B/feed_util" "$region" 100 &
	local feeder=$!
	env LD_PRELOAD="$LIB" VGPU_REGION="$region" FAKE_CUDA_STATS="$B/run/$name.stats" \
		NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-0000000000a0 VGPU_CORE_LIMITS="$pct" T_THREADS="$threads" \
		"$B/t_share" "$us" "$kind" "$pct" >"$B/run/$name.out" 2>&1 || true
	kill "$feeder" 2>/dev/null; wait "$feeder" 2>/dev/null || true
	read -r _ got n secs <"$B/run/$name.out" || { echo "FAIL $name: $(cat "$B/run/$name.out")"; return 1; }
	if awk -v g="$got" -v p="$pct" 'BEGIN { exit !(g >= p / 100 - 0.05 && g <= p / 100 + 0.05) }'; then
		printf 'ok   share %8s us %-6s at %2s%%, %d thread(s): busy %.3f over %5.1f s, %d launches\n' "$us" "$kind" "$pct" "$threads" "$got" "$secs" "$n"
	else
		printf 'FAIL share %8s us %-6s at %2s%%, %d thread(s): busy %.3f over %5.1f s, %d launches, want %.2f ± 0.05\n' "$us" "$kind" "$pct" "$threads" "$got" "$secs" "$n" "$(awk -v p="$pct" 'BEGIN { print p / 100 }')"
		return 1
	fi
}
pids=()
for c in $CASES; do
	IFS=: read -r us kind pct threads <<<"$c"
	run_case "$us" "$kind" "$pct" "$threads" &
	pids+=($!)
	if [ ${#pids[@]} -ge "$PAR" ]; then wait "${pids[0]}" || rc=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
