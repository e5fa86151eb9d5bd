package draprepare

import (
	"context"
	"fmt"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/vgpu-io/vgpu/lib/dra"
)

// Default directories of the kubelet's plugin registry and of this
// driver's DRA socket (docs/dra.md#preparing-a-claim).
const (
	DefaultRegistryDir = kubeletplugin.KubeletRegistryDir
	DefaultPluginDir   = kubeletplugin.KubeletPluginsDir + "/" + dra.Driver
	DefaultCDIDir      = "/var/run/cdi"
)

// Sockets says where the kubelet finds the driver.
type Sockets struct {
	// RegistryDir is the kubelet's plugin registry: the registration
	// socket goes there.
	RegistryDir string
	// PluginDir holds the DRA service's socket, dra.sock.
	PluginDir string
}

// Serve registers d with the kubelet and serves its DRA calls until the
// returned helper is stopped or ctx ends.
func Serve(ctx context.Context, d *Driver, client kubernetes.Interface, s Sockets) (*kubeletplugin.Helper, error) {
	for _, dir := range []string{s.RegistryDir, s.PluginDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("kubelet plugin directory: %w", err)
		}
	}
	return kubeletplugin.Start(ctx, d,
		kubeletplugin.DriverName(dra.Driver),
		kubeletplugin.KubeClient(client),
		kubeletplugin.NodeName(d.Node),
		kubeletplugin.RegistrarDirectoryPath(s.RegistryDir),
		kubeletplugin.PluginDataDirectoryPath(s.PluginDir),
		// Health reaches the scheduler as a device taint on the slice.
		kubeletplugin.HealthService(false),
	)
}
