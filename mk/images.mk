# Container images: one Dockerfile per binary under images/, and one for
# libvgpu built on an old glibc (images/libvgpu). Image names and the tag
# come from kustomize/base/kustomization.yaml, the one place where images are
# named, so that what `make images` builds is what the manifests run.
#
#   make images                       build with docker, podman or buildah
#   make images IMAGE_ENGINE=podman   pick the engine
#   make images IMAGE_PUSH=1          and push them

IMAGES_KUSTOMIZATION := $(ROOT)/kustomize/base/kustomization.yaml
# name=newName:newTag for every entry of the images: list.
image_refs = $(shell awk '$$1=="-" && $$2=="name:" {n=$$3} $$1=="newName:" {r=$$2} $$1=="newTag:" {print n "=" r ":" $$2}' $(IMAGES_KUSTOMIZATION))
image_ref  = $(patsubst $(1)=%,%,$(filter $(1)=%,$(image_refs)))

# Deployed images (short name in the manifests : Dockerfile directory).
IMAGES := vgpu-extender:extender vgpu-webhook:webhook vgpu-device-plugin:device-plugin vgpu-monitor:monitor
# libvgpu (copied into the device plugin's image) and vgpuctl are not
# deployed by the manifests; they share the extender's registry and tag.
IMAGE_REPO_PREFIX = $(dir $(firstword $(subst :, ,$(call image_ref,vgpu-extender))))
IMAGE_TAG         = $(lastword $(subst :, ,$(call image_ref,vgpu-extender)))
LIBVGPU_IMAGE     = $(IMAGE_REPO_PREFIX)vgpu-libvgpu:$(IMAGE_TAG)
VGPUCTL_IMAGE     = $(IMAGE_REPO_PREFIX)vgpuctl:$(IMAGE_TAG)

# The first engine that is installed and answers; buildah needs no daemon.
IMAGE_ENGINE ?= $(shell for e in docker podman; do \
	  if command -v $$e >/dev/null 2>&1 && timeout 20 $$e info >/dev/null 2>&1; then echo $$e; exit 0; fi; done; \
	  command -v buildah >/dev/null 2>&1 && echo buildah || true)
IMAGE_PUSH ?=

image_build = $(if $(filter buildah,$(IMAGE_ENGINE)),buildah bud,$(IMAGE_ENGINE) build)

.PHONY: images images-list

## images: build the container images (docker, podman or buildah; IMAGE_PUSH=1 pushes)
images:
	@if [ -z "$(IMAGE_ENGINE)" ]; then \
	  echo "make images: no container engine is available: none of docker, podman (installed and running) or buildah was found."; \
	  echo "make images: install one, or start its daemon, and run make images again; nothing was built."; \
	  exit 2; fi
	@echo "== images with $(IMAGE_ENGINE), version $(VERSION)"
	DOCKER_BUILDKIT=1 $(image_build) -f images/libvgpu/Dockerfile -t $(LIBVGPU_IMAGE) .
	@set -e; for pair in $(IMAGES); do \
	  name=$${pair%%:*}; dir=$${pair#*:}; \
	  ref=$$(echo "$(image_refs)" | tr ' ' '\n' | sed -n "s|^$$name=||p"); \
	  test -n "$$ref" || { echo "make images: $$name is not in $(IMAGES_KUSTOMIZATION)"; exit 1; }; \
	  echo "== $$ref"; \
	  DOCKER_BUILDKIT=1 $(image_build) -f images/$$dir/Dockerfile -t $$ref \
	    --build-arg VERSION=$(VERSION) $$( [ $$dir = device-plugin ] && echo --build-arg LIBVGPU_IMAGE=$(LIBVGPU_IMAGE) ) . ; \
	done
	DOCKER_BUILDKIT=1 $(image_build) -f images/vgpuctl/Dockerfile -t $(VGPUCTL_IMAGE) --build-arg VERSION=$(VERSION) .
	@if [ -n "$(IMAGE_PUSH)" ]; then for ref in $(LIBVGPU_IMAGE) $(VGPUCTL_IMAGE) $$(echo "$(image_refs)" | tr ' ' '\n' | grep '^vgpu-' | cut -d= -f2); do \
	  $(IMAGE_ENGINE) push $$ref || exit 1; done; fi

## images-list: the image references make images builds
images-list:
	@echo $(LIBVGPU_IMAGE) $(VGPUCTL_IMAGE); echo "$(image_refs)" | tr ' ' '\n' | grep '^vgpu-' | cut -d= -f2
