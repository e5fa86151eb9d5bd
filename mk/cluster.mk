# Local control plane for e2e tests, `make demo` and the scale benchmarks.
#
# etcd, kube-apiserver, kube-scheduler, kubectl and kwok are built from the
# pinned tools modules under test/tools/ (kept out of go.work, built with
# GOWORK=off so k8s.io/kubernetes never enters the product build list) into
# $(CACHE)/<tool>-<version>/. Each folder holds a .built-<hash> stamp whose hash
# covers that module's go.mod and go.sum: a warm build checks the stamp and
# neither rebuilds nor relinks; a version bump changes the folder and the hash.

TOOLS_SRC := $(ROOT)/test/tools

tools_version = $(shell awk '$$1=="$(2)"{print $$2; exit} $$1=="require" && $$2=="$(2)"{print $$3; exit}' $(TOOLS_SRC)/$(1)/go.mod)
tools_hash    = $(shell cat $(TOOLS_SRC)/$(1)/go.mod $(TOOLS_SRC)/$(1)/go.sum | sha256sum | cut -c1-12)

K8S_VERSION  := $(call tools_version,k8s,k8s.io/kubernetes)
ETCD_VERSION := $(call tools_version,etcd,go.etcd.io/etcd/server/v3)
KWOK_VERSION := $(call tools_version,kwok,sigs.k8s.io/kwok)
CONTAINERD_VERSION := $(call tools_version,containerd,github.com/containerd/containerd/v2)

K8S_DIR  := $(CACHE)/k8s-$(K8S_VERSION)
ETCD_DIR := $(CACHE)/etcd-$(ETCD_VERSION)
KWOK_DIR := $(CACHE)/kwok-$(KWOK_VERSION)
CONTAINERD_DIR := $(CACHE)/containerd-$(CONTAINERD_VERSION)

# The Kubernetes commands built; the list is part of the stamp, so adding one
# rebuilds. kubelet, kube-controller-manager and kube-proxy run the real node
# (test/cluster/realnode.go); kube-controller-manager also makes the DRA
# tests' claims (test/e2e/dra).
K8S_CMDS := kube-apiserver kube-scheduler kubectl kubelet kube-controller-manager kube-proxy

K8S_STAMP  := $(K8S_DIR)/.built-$(call tools_hash,k8s)-$(shell echo $(K8S_CMDS) | sha256sum | cut -c1-8)
ETCD_STAMP := $(ETCD_DIR)/.built-$(call tools_hash,etcd)
KWOK_STAMP := $(KWOK_DIR)/.built-$(call tools_hash,kwok)
CONTAINERD_STAMP := $(CONTAINERD_DIR)/.built-$(call tools_hash,containerd)

# The harness (test/cluster) finds the binaries through these variables.
CLUSTER_ENV := VGPU_KUBE_BIN_DIR=$(K8S_DIR) VGPU_ETCD_BIN=$(ETCD_DIR)/etcd \
	VGPU_KWOK_BIN=$(KWOK_DIR)/kwok VGPU_KWOK_STAGES=$(KWOK_DIR)/stages \
	VGPU_CONTAINERD_BIN_DIR=$(CONTAINERD_DIR)

K8S_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
K8S_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
	-X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=$(K8S_MINOR) \
	-X $(p).gitTreeState=clean -X $(p).buildDate=1970-01-01T00:00:00Z)

CLUSTER_DIR ?= $(CACHE)/cluster
CLUSTER_NODES ?= 4
BENCH_NODES ?= 1000
BENCH_PODS ?= 3000
BENCH_QPS ?= 2000
# The modes of issue 4 with the same scheduler client limits: stock
# kube-scheduler with whole GPUs, the fractional pods on kube-scheduler alone
# (shares, the floor), vgpu's extender with fractional pods, and the same
# pods as DRA claims on the stock scheduler (dra, docs/dra.md).
BENCH_ARGS ?= --modes stock,shares,vgpu,dra --scheduler-qps 1000

TEST_TARGETS += test-e2e

.PHONY: tools cluster-up cluster-down test-e2e test-realnode bench-scheduling $(CACHE)/bin/vgpu-cluster $(CACHE)/bin/bench-scheduling

## tools: build etcd, the Kubernetes commands, kwok and containerd into .cache/ (once)
tools: $(K8S_STAMP) $(ETCD_STAMP) $(KWOK_STAMP) $(CONTAINERD_STAMP)

# containerd 2.x for the real node: Debian's 1.6 has no CDI, which the
# kubelet's DRA path needs. runc and the CNI plugins come from Debian.
# btrfs and devmapper need C headers and are not used here.
$(CONTAINERD_STAMP):
	@mkdir -p $(CONTAINERD_DIR)
	@echo "== building containerd $(CONTAINERD_VERSION) into $(CONTAINERD_DIR)"
	cd $(TOOLS_SRC)/containerd && GOWORK=off $(GO) build -trimpath -tags no_btrfs,no_devmapper,no_zfs -ldflags '-s -w' -o $(CONTAINERD_DIR)/ \
		$(addprefix github.com/containerd/containerd/v2/cmd/,containerd ctr containerd-shim-runc-v2)
	@rm -f $(CONTAINERD_DIR)/.built-* && touch $@

$(K8S_STAMP):
	@mkdir -p $(K8S_DIR)
	@echo "== building $(K8S_CMDS) $(K8S_VERSION) into $(K8S_DIR) (cold: ~15 min)"
	cd $(TOOLS_SRC)/k8s && GOWORK=off $(GO) build -trimpath -ldflags '$(K8S_LDFLAGS)' -o $(K8S_DIR)/ \
		$(addprefix k8s.io/kubernetes/cmd/,$(K8S_CMDS))
	@rm -f $(K8S_DIR)/.built-* && touch $@

$(ETCD_STAMP):
	@mkdir -p $(ETCD_DIR)
	@echo "== building etcd $(ETCD_VERSION) into $(ETCD_DIR)"
	cd $(TOOLS_SRC)/etcd && GOWORK=off $(GO) build -trimpath -ldflags '-s -w' -o $(ETCD_DIR)/etcd .
	@rm -f $(ETCD_DIR)/.built-* && touch $@

# kwok refuses to start without stage configs; the module ships the "fast"
# node and pod stages, copied next to the binary.
$(KWOK_STAMP):
	@mkdir -p $(KWOK_DIR)/stages
	@echo "== building kwok $(KWOK_VERSION) into $(KWOK_DIR)"
	cd $(TOOLS_SRC)/kwok && GOWORK=off $(GO) build -trimpath -ldflags '-s -w' -o $(KWOK_DIR)/kwok sigs.k8s.io/kwok/cmd/kwok
	src=$$(cd $(TOOLS_SRC)/kwok && GOWORK=off $(GO) list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage; \
	  install -m 0644 $$src/node/fast/node-initialize.yaml $$src/pod/fast/pod-*.yaml $(KWOK_DIR)/stages/
	@rm -f $(KWOK_DIR)/.built-* && touch $@

## test-e2e: end-to-end tests on a local control plane (builds the tools once), and on the real node as root
# The real node's suite (test/e2e/realnode) installs the images of make images.
test-e2e: tools build images
	cd test && VGPU_E2E=1 $(CLUSTER_ENV) VGPU_IMAGES_DIR=$(IMAGES_DIR) $(GO) test $(GO_TEST_FLAGS) -timeout 30m ./...

## test-realnode: only the real node's suite (root; containerd, the kubelet, kubectl apply -k)
test-realnode: tools build images
	cd test && VGPU_E2E=1 $(CLUSTER_ENV) VGPU_IMAGES_DIR=$(IMAGES_DIR) $(GO) test $(GO_TEST_FLAGS) -v -timeout 10m ./e2e/realnode/

# Small programs of the test module; go build's cache makes a rebuild cheap.
$(CACHE)/bin/vgpu-cluster $(CACHE)/bin/bench-scheduling:
	@mkdir -p $(@D)
	cd test && $(GO) build -o $@ ./cmd/$(@F)

## cluster-up: start a control plane with CLUSTER_NODES simulated GPU nodes in .cache/cluster
cluster-up: tools $(CACHE)/bin/vgpu-cluster
	@$(CLUSTER_ENV) $(CACHE)/bin/vgpu-cluster up --dir $(CLUSTER_DIR) --nodes $(CLUSTER_NODES)
	@echo "export PATH=$(K8S_DIR):\$$PATH   # kubectl $(K8S_VERSION) (any kubectl works)"
	@echo "# logs: $(CLUSTER_DIR)/logs; stop with: make cluster-down"

## cluster-down: stop the cluster started by cluster-up and remove .cache/cluster
cluster-down: $(CACHE)/bin/vgpu-cluster
	@$(CACHE)/bin/vgpu-cluster down --dir $(CLUSTER_DIR)

## bench-scheduling: kube-scheduler throughput, BENCH_NODES × 8 GPUs, BENCH_PODS pods (minutes; not part of make bench)
bench-scheduling: tools $(CACHE)/bin/bench-scheduling
	$(CLUSTER_ENV) $(CACHE)/bin/bench-scheduling --nodes $(BENCH_NODES) --pods $(BENCH_PODS) --qps $(BENCH_QPS) $(BENCH_ARGS)
