// Command deviceplugin is vgpu's kubelet device plugin and node GPU inventory
// publisher. See docs/deviceplugin.md.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/daemon"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/discovery"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draprepare"
	"github.com/vgpu-io/vgpu/internal/daemoncmd"
	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	cfg := daemon.Config{}
	var ignoredXids string
	kube := kubeclient.Options{Component: "deviceplugin"}
	root := daemoncmd.New("deviceplugin", "vgpu kubelet device plugin and node GPU inventory publisher",
		func(ctx context.Context, log *zap.Logger) (err error) {
			if cfg.IgnoredXids, err = discovery.ParseXids(ignoredXids); err != nil {
				return fmt.Errorf("--ignored-xids: %w", err)
			}
			if cfg.Mode != daemon.ModeDevicePlugin && cfg.Mode != daemon.ModeDRA {
				return fmt.Errorf("--mode %q: must be %s or %s", cfg.Mode, daemon.ModeDevicePlugin, daemon.ModeDRA)
			}
			if cfg.NodeName == "" {
				return fmt.Errorf("the node name is empty: set --node-name or NODE_NAME (the downward API's spec.nodeName)")
			}
			// GPUs first: a node without any has nothing to do here.
			lib, err := daemon.OpenNVML(cfg.NVML, cfg.NodeName)
			if err != nil {
				return err
			}
			defer lib.Shutdown()
			client, err := kube.Client()
			if err != nil {
				return err
			}
			log.Info("starting", zap.String("version", version.Version), zap.String("node", cfg.NodeName), zap.String("nvml", cfg.NVML))
			return daemon.Run(ctx, cfg, daemon.Deps{Client: client, NVML: lib, Log: log})
		})
	f := root.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "name of this node (default $NODE_NAME)")
	f.StringVar(&cfg.Mode, "mode", daemon.ModeDevicePlugin, "scheduling path: device-plugin (the extender path) or dra (publish a ResourceSlice, register no device plugin); see docs/dra.md")
	f.StringVar(&cfg.NVML, "nvml", "", gpumock.FlagUsage)
	f.StringVar(&cfg.SocketDir, "kubelet-socket-dir", pluginapi.DevicePluginPath, "the kubelet's device plugin directory (holds kubelet.sock)")
	f.StringVar(&cfg.SocketName, "socket-name", "vgpu.sock", "this plugin's socket name in --kubelet-socket-dir")
	f.StringVar(&cfg.HostRoot, "host-root", contract.HostRoot, "vgpu's directory on the host: libvgpu in lib/, region directories in containers/")
	f.StringVar(&cfg.LibvgpuSource, "libvgpu", "/opt/vgpu/libvgpu.so", "libvgpu in the plugin image, installed into --host-root/lib")
	f.StringVar(&cfg.SysfsRoot, "sysfs-root", "/sys", "where sysfs is mounted (read for GPU NUMA nodes)")
	f.StringVar(&cfg.Namespace, "namespace", contract.DefaultNamespace, "namespace of the settings ConfigMap")
	f.StringVar(&cfg.SettingsConfigMap, "settings-configmap", contract.SettingsConfigMap, "name of the settings ConfigMap")
	f.StringVar(&cfg.DRASockets.RegistryDir, "dra-registry-dir", draprepare.DefaultRegistryDir, "DRA mode: the kubelet's plugin registry directory (the registration socket goes there)")
	f.StringVar(&cfg.DRASockets.PluginDir, "dra-plugin-dir", draprepare.DefaultPluginDir, "DRA mode: directory of the kubelet DRA service's socket (dra.sock)")
	f.StringVar(&cfg.CDIDir, "cdi-dir", draprepare.DefaultCDIDir, "DRA mode: the container runtime's CDI spec directory, where prepared claims' CDI specs are written")
	healthserver.AddFlag(f, &cfg.MetricsAddress, ":9395", "address of /healthz, /readyz and /metrics; empty to disable")
	f.BoolVar(&cfg.AdvertiseCapacity, "advertise-capacity", false, "also write nvidia.com/gpu capacity into the Node status (for kwok nodes, which have no kubelet)")
	f.StringVar(&ignoredXids, "ignored-xids", joinXids(discovery.DefaultIgnoredXids), "Xid errors that do not make a GPU unhealthy (application errors)")
	kube.AddFlags(f, 5, 10)
	daemoncmd.Main(root)
}

func joinXids(xs []uint64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
