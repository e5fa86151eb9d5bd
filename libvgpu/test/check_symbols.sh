#!/bin/bash
# Test 7, packaging: what the built libvgpu.so asks of the C library and what
# it offers. One build must load on glibc 2.17 and later, so no symbol version
# above GLIBC_2.17 and nothing GLIBC_PRIVATE; no _dl_sym/__libc_dlsym; no
# dependency on libcuda or libnvidia-ml; and exports exactly libvgpu.map.
#   check_symbols.sh LIBVGPU
set -eu -o pipefail
LIB=$1
HERE=$(cd "$(dirname "$0")" && pwd)
fail() { echo "FAIL $*" >&2; exit 1; }
T=$(objdump -T "$LIB")

vers=$(grep -o 'GLIBC_[0-9.A-Z_]*' <<<"$T" | sort -u)
grep -q GLIBC_PRIVATE <<<"$vers" && fail "needs GLIBC_PRIVATE symbols"
max=$(grep -o 'GLIBC_[0-9.]*' <<<"$vers" | sed 's/GLIBC_//' | sort -V | tail -1)
[ "$(printf '%s\n2.17\n' "$max" | sort -V | tail -1)" = 2.17 ] || fail "needs GLIBC_$max > GLIBC_2.17: $(grep -E "GLIBC_$max" <<<"$T")"
grep -Eq '\b(_dl_sym|__libc_dlsym|__libc_dlopen_mode)\b' <<<"$T" && fail "uses a private loader entry point"
needed=$(objdump -p "$LIB" | awk '/NEEDED/ {print $2}' | sort | tr '\n' ' ')
[ "$needed" = "libc.so.6 " ] || fail "DT_NEEDED is '$needed', want only libc.so.6 (no libdl.so.2: images without it exist)"
# The loader's functions live in libdl.so.2 before glibc 2.34: weak references only.
strong=$(awk '/\*UND\*/ && $2 != "w" && $NF ~ /^dl(open|sym|vsym|error|close|addr|info|mopen)$/ {print $NF}' <<<"$T" | tr '\n' ' ')
[ -z "$strong" ] || fail "strong references to libdl functions: $strong"

# Defined dynamic symbols vs. the allowlist.
exported=$(awk '$0 ~ /\.text|\.data|\.bss/ && $0 !~ /\*UND\*/ {print $NF}' <<<"$T" | sort)
allowed=$(sed -n '/global:/,/local:/p' "$HERE/../src/libvgpu.map" | grep -v -e global: -e local: |
	tr ';' '\n' | tr -d ' ' | grep -v '^$' | sort)
diff <(echo "$exported") <(echo "$allowed") >/dev/null || {
	diff <(echo "$exported") <(echo "$allowed") | sed 's/^</exported, not allowed:/; s/^>/allowed, not exported:/' >&2
	fail "exports differ from libvgpu.map"
}
echo "ok   7 packaging: glibc versions $(echo $vers | tr '\n' ' ')(max $max <= 2.17), no GLIBC_PRIVATE, NEEDED: $needed, $(wc -l <<<"$exported") exports = libvgpu.map"
