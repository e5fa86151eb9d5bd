#!/bin/bash
# libvgpu against the real NVIDIA driver library, without a GPU: Debian
# non-free's libcuda1 and libnvidia-ml1 (bookworm 535, trixie 550), fetched
# into CACHE with apt's configuration and state under CACHE (the machine's
# apt sources are not touched). Without a GPU the driver loads, cuInit fails
# with CUDA_ERROR_NO_DEVICE and cuGetProcAddress still answers. Proves, per
# driver:
#   - every lookup route (cuGetProcAddress and _v2 for CUDA 11.3..12.9 and
#     every stream flag, dlsym on the driver's handle, dlsym(RTLD_NEXT) from a
#     library after libvgpu) gives libvgpu's hook of exactly the variant the
#     driver returned for every hooked entry point, and the driver's own
#     pointer, untouched, for everything else (a reference run without
#     libvgpu is the truth);
#   - every export that allocates device memory or launches work is hooked
#     (exports.review);
#   - a failing cuInit changes nothing the application sees.
#   driver/run.sh LIBVGPU CACHE WORKDIR
set -eu -o pipefail
LIB=$(readlink -f "$1")
C=$(mkdir -p "$2/libvgpu/driver" && cd "$2/libvgpu/driver" && pwd)
W=$3
HERE=$(cd "$(dirname "$0")" && pwd)
MIRROR=${LIBVGPU_MIRROR:-http://deb.debian.org/debian}
SUITES="bookworm trixie"
fail() { echo "FAIL $*" >&2; exit 1; }
skip() { echo "skip real-driver suite: $*"; exit 0; }

# Fetch once: the .debs stay in the cache.
fetch() {
	local a=$C/apt
	mkdir -p "$a/etc/sources.list.d" "$a/etc/preferences.d" "$a/etc/apt.conf.d" "$a/state/lists/partial" \
		"$a/cache/archives/partial" "$C/deb"
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	[ -r $key ] || return 1
	: >"$a/etc/sources.list"
	for s in $SUITES; do echo "deb [signed-by=$key] $MIRROR $s non-free" >>"$a/etc/sources.list"; done
	A=(-o Dir::Etc="$a/etc" -o Dir::State="$a/state" -o Dir::Cache="$a/cache" -o Dir::State::status=/dev/null
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root)
	apt-get "${A[@]}" -qq update >"$C/apt.log" 2>&1 || return 1
	(cd "$C/deb" && for s in $SUITES; do
		apt-get "${A[@]}" -qq download "libcuda1/$s" "libnvidia-ml1/$s" >>"$C/apt.log" 2>&1 || exit 1
	done) || return 1
}
have_debs() { [ "$(ls "$C/deb"/libcuda1_*.deb "$C/deb"/libnvidia-ml1_*.deb 2>/dev/null | wc -l)" -ge 4 ]; }
have_debs || fetch || skip "cannot fetch libcuda1/libnvidia-ml1 from $MIRROR non-free ($(tail -1 "$C/apt.log" 2>/dev/null))"
have_debs || skip "libcuda1/libnvidia-ml1 not found in $MIRROR non-free"

rm -rf "$W" && mkdir -p "$W"
gcc -O2 -Wall -o "$W/t_driver" "$HERE/t_driver.c" -ldl
hooked=$(nm -D --defined-only "$LIB" | awk '$3 ~ /^(cu|nvml)/ {print $3}' | sort)
for deb in "$C/deb"/libcuda1_*.deb; do
	ver=$(basename "$deb" | cut -d_ -f2)
	X=$C/x/$ver
	if [ ! -e "$X/ok" ]; then
		rm -rf "$X" && mkdir -p "$X"
		dpkg -x "$deb" "$X" && dpkg -x "$C/deb/libnvidia-ml1_${ver}_amd64.deb" "$X" && touch "$X/ok"
	fi
	D=$(dirname "$(find "$X" -name libcuda.so.1 | head -1)")
	R=$W/$ver && mkdir -p "$R"
	exports=$(nm -D --defined-only "$D/libcuda.so.1" | awk '$2 == "T" {print $3}' | sort)

	# Completeness: every candidate export is reviewed; the ones to hook are hooked.
	n_cand=0 unreviewed="" unhooked=""
	while read -r name; do
		n_cand=$((n_cand + 1))
		rule=$(awk -F'\t' -v n="$name" '!/^#/ && NF >= 3 && n ~ $2 {print $1; exit}' "$HERE/exports.review")
		[ -n "$rule" ] || unreviewed+=" $name"
		[ "$rule" != hook ] || grep -qx "$name" <<<"$hooked" || unhooked+=" $name"
	done < <(grep -E 'Alloc|Create|Launch|Instantiate|SetLimit|Import|Map|Retain|Load|Upload|Multicast|Pool|Node|Reserve|Register|Graph' <<<"$exports")
	[ -z "$unreviewed" ] || fail "driver $ver exports names no rule of exports.review covers (do they allocate device memory or launch work?):$unreviewed"
	[ -z "$unhooked" ] || fail "driver $ver: these allocate or launch (exports.review) but libvgpu does not hook them:$unhooked"
	# And nothing libvgpu hooks is missing from the driver (a typo would hook nothing).
	missing=$(comm -23 <(grep '^cu' <<<"$hooked") <(echo "$exports"))
	[ -z "$missing" ] || fail "libvgpu hooks names driver $ver does not export: $missing"

	# Every lookup route, with and without libvgpu.
	gcc -O2 -fPIC -shared -o "$R/libprobe_late.so" "$HERE/../probe_next.c" -L"$D" -l:libcuda.so.1 -ldl
	names=$( (echo "$exports"; nm -D --defined-only "$D/libnvidia-ml.so.1" | awk '$2 == "T" && $3 ~ /^nvml/ {print $3}') )
	env LD_LIBRARY_PATH="$D" "$W/t_driver" "$R/libprobe_late.so" <<<"$names" >"$R/ref.txt" 2>"$R/ref.err" \
		|| { cat "$R/ref.err"; fail "driver $ver: reference run"; }
	env LD_LIBRARY_PATH="$D" LD_PRELOAD="$LIB" NVIDIA_VISIBLE_DEVICES=GPU-00000000-0000-0000-0000-0000000000a0 \
		VGPU_MEMORY_LIMITS_MIB=1024 VGPU_CORE_LIMITS=50 VGPU_REGION="$R/region" \
		"$W/t_driver" "$R/libprobe_late.so" <<<"$names" >"$R/got.txt" 2>"$R/got.err" \
		|| { cat "$R/got.err"; fail "driver $ver: run with libvgpu exited with an error"; }
	grep -q '^call cuInit rc=100$' "$R/ref.txt" || fail "driver $ver: cuInit did not fail with CUDA_ERROR_NO_DEVICE: $(grep cuInit "$R/ref.txt")"
	[ ! -s "$R/got.err" ] || { cat "$R/got.err"; fail "driver $ver: libvgpu wrote to stderr while cuInit failed"; }
	summary=$(paste -d'\t' "$R/ref.txt" "$R/got.txt" | awk -F'\t' -v hooked="$hooked" '
		BEGIN { n = split(hooked, h, "\n"); for (i = 1; i <= n; i++) H[h[i]] = 1 }
		{
			split($1, r, " "); split($2, g, " ")
			if (r[1] != g[1] || r[2] != g[2] || r[3] != g[3] || r[4] != g[4]) { print "FAIL line " NR ": " $1 " | " $2; exit 1 }
			if (r[1] == "call") { if ($1 != $2) { print "FAIL cuInit failed: " $1 " without libvgpu, " $2 " with"; exit 1 } calls++; next }
			want = $1; t = r[length(r)]; sub(/^[^:]*:/, "", t)
			if (r[length(r)] ~ /^(libcuda|libnvidia-ml):/ && (t in H)) { want = r[1] " " r[2] " " r[3] " " r[4] " " r[5] " libvgpu:" t; hooks++ }
			else if (r[1] == "next" && (r[2] in H)) { want = r[1] " " r[2] " - - - libvgpu:" r[2]; hooks++ }
			else same++
			if ($2 != want) { print "FAIL want \"" want "\" got \"" $2 "\""; exit 1 }
			total++
		}
		END { printf "%d lookups: %d hooks of the exact variant, %d untouched; %d calls after the failed cuInit unchanged\n", total, hooks, same, calls }')
	case $summary in FAIL*) fail "driver $ver: $summary";; esac
	echo "ok   real driver $ver ($(wc -l <<<"$exports") exports, $n_cand reviewed): $summary"
done
