package kustomizetest

// Flags of vgpu's binaries that the manifests and these tests rely on.
const (
	extenderListenFlag = "listen"
	webhookListenFlag  = "listen"
)
