# Container images, built without a container engine (docs/install.md#images).
#
# images/images.yaml defines every image once: which files of `make build`,
# `make build-libvgpu` and `make tools` it holds, its entrypoint and user.
# images/main.go (go-containerregistry as a library, in its own module kept out
# of the workspace like test/tools) assembles them and writes one
# docker-archive tarball per image into $(IMAGES_DIR); `ctr images import`,
# `docker load` and `skopeo copy docker-archive:...` take them. Names and the
# tag come from kustomize/base/kustomization.yaml.
#
# No base image can be pulled: an image with a dynamically linked program gets
# the C library from Debian's libc6 package, the same version the binaries
# were linked against on this machine.

IMAGES_DIR  ?= $(CACHE)/images
IMAGES_LIBC := $(IMAGES_DIR)/libc
LIBC_VERSION := $(shell dpkg-query -W -f '$${Version}' libc6 2>/dev/null)
IMAGES_LIBC_STAMP := $(IMAGES_LIBC)/.libc6-$(LIBC_VERSION)

TEST_TARGETS += test-images

.PHONY: images images-list test-images

## images: build every image of images/images.yaml as docker-archive tarballs in .cache/images (no container engine)
images: build $(LIBVGPU_SO) $(K8S_STAMP) $(IMAGES_LIBC_STAMP)
	@libvgpu/test/check_symbols.sh $(LIBVGPU_SO) >/dev/null
	@echo "== images into $(IMAGES_DIR)"
	@mkdir -p $(IMAGES_DIR)/bin
	cd images && CGO_ENABLED=0 GOWORK=off $(GO) build -trimpath -o $(IMAGES_DIR)/bin/pause ./pause
	$(CC) -O2 -fPIC -shared -pthread -fvisibility=hidden -Wl,-Bsymbolic -Wl,-soname,libcuda.so.1 -Ilibvgpu/include \
	  -DcuDeviceGetUuid=fake_ordinal_uuid -DcuDeviceGetUuid_v2=fake_ordinal_uuid_v2 \
	  -o $(IMAGES_DIR)/bin/libcuda.so.1 libvgpu/test/fake/fake_cuda.c libvgpu/test/fake/fake_common.c \
	  test/e2e/realnode/workload/visible_uuid.c
	$(CC) -O2 -Ilibvgpu/include -o $(IMAGES_DIR)/bin/alloc test/e2e/realnode/workload/alloc.c -L$(IMAGES_DIR)/bin -l:libcuda.so.1
	cd images && K8S_DIR=$(K8S_DIR) IMAGES_BIN=$(IMAGES_DIR)/bin GOWORK=off $(GO) run . --repo $(ROOT) --out $(IMAGES_DIR) --libc-root $(IMAGES_LIBC)/root

# The package, not the host's files: it holds exactly the C library and
# nothing that happens to be installed here.
$(IMAGES_LIBC_STAMP):
	@test -n "$(LIBC_VERSION)" || { echo "make images: needs dpkg and the libc6 package (Debian or Ubuntu) for the C library layer"; exit 1; }
	@rm -rf $(IMAGES_LIBC) && mkdir -p $(IMAGES_LIBC)
	cd $(IMAGES_LIBC) && { apt-get download -q libc6=$(LIBC_VERSION) 2>/dev/null || { apt-get update -qq && apt-get download -q libc6=$(LIBC_VERSION); }; }
	dpkg -x $(IMAGES_LIBC)/libc6_*.deb $(IMAGES_LIBC)/root && rm -rf $(IMAGES_LIBC)/root/usr/share
	@touch $@

## images-list: the image references make images builds
images-list:
	@cd images && GOWORK=off $(GO) run . --repo $(ROOT) --list

# The archives against the manifests: every container of every overlay runs a
# program its image holds, executable by its user, with its loader and
# libraries.
test-images: images
	cd images && VGPU_IMAGES_DIR=$(IMAGES_DIR) GOWORK=off $(GO) test $(GO_TEST_FLAGS) ./...
