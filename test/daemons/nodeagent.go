package daemons

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vgpu-io/vgpu/test/cluster"
)

// NodeAgentName is the process name of the node agent of node.
func NodeAgentName(node string) string { return "vgpu-device-plugin-" + node }

// StartNodeAgent runs cmd/deviceplugin for a kwok node, simulating the GPUs
// nvml names (gpunode.MockFlag): its own socket and host directories under
// the cluster's folder, no libvgpu, and capacity written into the Node
// status since no kubelet does it. extraArgs (e.g. --mode=dra) come last.
func StartNodeAgent(ctx context.Context, c *cluster.Cluster, node, nvml string, extraArgs ...string) error {
	p, err := NodeAgent(c, node, nvml, extraArgs...)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return fmt.Errorf("node agent of %s: %w (log: %s)", node, err, c.LogPath(p.name))
	}
	return nil
}

// NodeAgent is the node agent StartNodeAgent runs, not started yet: a test
// that kills and restarts it (Process.Kill, Process.Start) keeps it.
func NodeAgent(c *cluster.Cluster, node, nvml string, extraArgs ...string) (*Process, error) {
	bin, err := Binary("deviceplugin")
	if err != nil {
		return nil, err
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.Dir, "deviceplugin-"+node)
	kubelet := kubeletDir(c, node)
	args := append([]string{
		"--node-name=" + node, "--nvml=" + nvml, "--kubeconfig=" + c.Kubeconfig,
		"--kubelet-socket-dir=" + filepath.Join(dir, "device-plugins"),
		"--host-root=" + filepath.Join(dir, "vgpu"),
		"--sysfs-root=" + filepath.Join(dir, "sys"),
		"--libvgpu=" + filepath.Join(dir, "no-libvgpu.so"),
		"--metrics-address=127.0.0.1:" + strconv.Itoa(ports[0]),
		"--advertise-capacity",
		"--dra-registry-dir=" + filepath.Join(kubelet, "plugins_registry"),
		"--dra-plugin-dir=" + filepath.Join(kubelet, "plugin"),
		"--cdi-dir=" + NodeAgentCDIDir(c, node),
	}, extraArgs...)
	healthz := fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[0])
	return &Process{c: c, name: NodeAgentName(node), bin: bin, args: args, ready: cluster.HTTPReady(healthz)}, nil
}

// kubeletDir holds the node agent's DRA sockets (DRA mode): under the
// cluster's folder, or, where that path is too long for a unix socket
// (108 bytes), a short one named after it.
func kubeletDir(c *cluster.Cluster, node string) string {
	dir := filepath.Join(c.Dir, "deviceplugin-"+node, "kubelet")
	if len(dir) <= 60 {
		return dir
	}
	sum := sha256.Sum256([]byte(dir))
	return filepath.Join(os.TempDir(), "vgpu-"+hex.EncodeToString(sum[:6]))
}

// NodeAgentDRASocket is where the node agent of node serves the kubelet's
// DRA service in DRA mode.
func NodeAgentDRASocket(c *cluster.Cluster, node string) string {
	return filepath.Join(kubeletDir(c, node), "plugin", "dra.sock")
}

// NodeAgentCDIDir is where the node agent of node writes CDI specs.
func NodeAgentCDIDir(c *cluster.Cluster, node string) string {
	return filepath.Join(c.Dir, "deviceplugin-"+node, "cdi")
}
