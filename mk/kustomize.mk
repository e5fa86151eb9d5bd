# Kustomize manifests (kustomize/) and their tests.
#
# `make test-go` runs kustomize/kustomize_test without a cluster: every
# overlay rendered and strictly decoded, overlay differences, RBAC, probes,
# flags against the real binaries. This target adds the checks against the
# local control plane's real API server: `kubectl apply -k --dry-run=server`
# for every overlay, and RBAC and webhook scope of an installed overlay.

TEST_TARGETS += test-kustomize-e2e

.PHONY: test-kustomize-e2e

## test-kustomize-e2e: apply the overlays to a local API server (dry run, RBAC, webhook scope)
test-kustomize-e2e: tools
	cd kustomize && VGPU_E2E=1 $(CLUSTER_ENV) $(GO) test $(GO_TEST_FLAGS) -run E2E -timeout 10m ./...
