# vgpu — build, test, demo and benchmarks.
#
# Each part of the project adds its own targets in mk/<part>.mk and appends them
# to TEST_TARGETS / BENCH_TARGETS, so this file stays the table of contents.
# Everything the build needs beyond Go, gcc and make is fetched into $(CACHE).

SHELL       := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

ROOT    := $(CURDIR)
CACHE   ?= $(ROOT)/.cache
BIN     := $(ROOT)/bin
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/vgpu-io/vgpu/lib/version.Version=$(VERSION)

# Product modules of the workspace (go.work). `go test ./...` at the root of a
# workspace tests nothing, so every target loops over these.
MODULES  := lib internal cmd/extender cmd/deviceplugin cmd/webhook cmd/monitor cmd/vgpuctl test kustomize
BINARIES := extender deviceplugin webhook monitor vgpuctl

GO_TEST_FLAGS ?= -count=1
# go-nvml's cgo preamble calls NVML functions that NVML 13 marks deprecated:
# hundreds of warnings that say nothing about vgpu.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE)/bin/staticcheck-$(STATICCHECK_VERSION)

TEST_TARGETS  := test-go
BENCH_TARGETS := bench-go

-include mk/*.mk

.PHONY: all build test lint bench test-go bench-go fuzz clean help $(addprefix $(BIN)/,$(BINARIES))

all: build

## build: compile every binary into bin/, as the images build them
build: $(addprefix $(BIN)/,$(BINARIES))

# Outside the workspace (GOWORK=off), from each binary's own go.mod, as the
# images do: what the tests run is what ships. `make lint` fails when a
# module's go.mod selects other versions than the workspace.
$(addprefix $(BIN)/,$(BINARIES)):
	@mkdir -p $(BIN)
	cd cmd/$(@F) && GOWORK=off $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ .

## test: the whole test suite (unit, libvgpu, end-to-end)
test: $(TEST_TARGETS)
	@echo "make test: all suites passed ($(TEST_TARGETS))"

# The tests that run vgpu's binaries take them from bin/ (VGPU_BIN_DIR), built
# once above rather than inside a test's timeout.
export VGPU_BIN_DIR := $(BIN)

test-go: build
	@for m in $(MODULES); do echo "== go test $$m"; (cd $$m && $(GO) test $(GO_TEST_FLAGS) ./...) || exit 1; done

## fuzz: run each lib fuzz target for FUZZTIME (default 20s)
FUZZTIME ?= 20s
fuzz:
	@cd lib && for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep ^Fuzz || true); do \
	    echo "== fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; done

## lint: gofmt, go vet, staticcheck, and module versions in line with the workspace
lint: $(STATICCHECK)
	@mk/module-versions.sh $(MODULES)
	@out=$$(gofmt -l $(MODULES) $(LINT_EXTRA_DIRS)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES) $(LINT_EXTRA_DIRS); do echo "== vet+staticcheck $$m"; (cd $$m && $(GO) vet ./... && $(STATICCHECK) ./...) || exit 1; done

$(STATICCHECK):
	@mkdir -p $(CACHE)/bin
	GOBIN=$(CACHE)/bin/.staticcheck $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(CACHE)/bin/.staticcheck/staticcheck $@

## bench: every benchmark; prints numbers, fails only if a benchmark breaks
bench: $(BENCH_TARGETS)

bench-go:
	@for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./... | grep -Ev '^(PASS|ok|\?|goos|goarch|cpu|pkg)' || true); done

clean:
	rm -rf $(BIN)

## help: list the targets
help:
	@grep -hE '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'
