# `make demo`, the README's first command: the local control plane, every vgpu
# daemon as a real process, the sample workloads and what vgpu made of them.
# KEEP=1 leaves the cluster up until Ctrl-C.

DEMO_DIR ?= $(CACHE)/demo

.PHONY: demo $(CACHE)/bin/demo

## demo: run vgpu on a local control plane with simulated GPU nodes (KEEP=1 leaves it up)
demo: tools build build-libvgpu $(CACHE)/bin/demo
	@$(CLUSTER_ENV) $(CACHE)/bin/demo --dir $(DEMO_DIR) --bin-dir $(BIN) --repo $(ROOT)

$(CACHE)/bin/demo:
	@mkdir -p $(@D)
	cd test && $(GO) build -o $@ ./cmd/demo
