# Kustomize manifests (kustomize/) and their tests.
#
# `make test-go` runs kustomize/kustomize_test without a cluster: every
# overlay rendered with the kustomize library and strictly decoded, overlay
# differences, RBAC rules, probes, images, the flags the manifests pass
# against the binaries built from their image's build context, docs links.
# This target adds the checks against the local control plane's real API
# server: every overlay (and the optional components) through
# `kubectl apply -k --dry-run=server` and server-side apply dry runs; RBAC of
# an installed overlay by SubjectAccessReview; which pods depend on the
# webhook; and each binary, started with its manifest's flags, answering its
# readiness and liveness probes.

TEST_TARGETS += test-kustomize-e2e

.PHONY: test-kustomize-e2e

## test-kustomize-e2e: apply the overlays to a local API server (dry run, RBAC, webhook scope)
test-kustomize-e2e: tools build
	cd kustomize && VGPU_E2E=1 $(CLUSTER_ENV) $(GO) test $(GO_TEST_FLAGS) -run E2E -timeout 10m ./...
