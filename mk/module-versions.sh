#!/usr/bin/env bash
# Fails when a module, built on its own (GOWORK=off, as `make build` and the
# images build it), would compile any package from another version of a
# dependency than the workspace that the tests run in selects.
#   usage: mk/module-versions.sh MODULE_DIR...
# Fix with `go work sync`, then `GOWORK=off go mod tidy` in each module.
set -euo pipefail

# Every non-local module that provides a package to the module's build or
# tests, with its version.
built_modules() {
	go list -deps -test -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}' ./... |
		grep -v -e '^$' -e '^github.com/vgpu-io/vgpu/' | sort -u
}

rc=0
for m in "$@"; do
	own=$(cd "$m" && GOWORK=off built_modules)
	ws=$(cd "$m" && built_modules)
	skew=$(join -a1 <(echo "$own") <(echo "$ws") |
		awk '$2 != $3 {print "  " $1 ": its go.mod selects " $2 ", the workspace " ($3 == "" ? "nothing" : $3)}')
	if [ -n "$skew" ]; then
		echo "$m builds with other versions than the tests run (fix: go work sync; GOWORK=off go mod tidy):"
		echo "$skew"
		rc=1
	fi
done
exit $rc
