// Command monitor is vgpu's node agent: it exports per-GPU and per-container
// usage as Prometheus metrics, feeds libvgpu's compute throttle with the
// utilisation it measures, and removes the regions of pods that are gone.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/agent"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/internal/daemoncmd"
	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
	"github.com/vgpu-io/vgpu/lib/contract"
)

func main() {
	var (
		cfg      agent.Config
		listen   string
		nvmlSpec string
		mode     string
		kube     = kubeclient.Options{Component: "monitor"}
		// toleranceMiB is cfg.MemoryTolerance in MiB.
		toleranceMiB uint64
	)
	root := daemoncmd.New("monitor", "vgpu node agent exporting per-GPU and per-container usage as Prometheus metrics",
		func(ctx context.Context, log *zap.Logger) error {
			cfg.MemoryTolerance = toleranceMiB << 20
			if cfg.AuditInterval <= 0 {
				return fmt.Errorf("--audit-interval=%s: must be positive", cfg.AuditInterval)
			}
			if cfg.NodeName == "" {
				return fmt.Errorf("--node-name is empty: set it or the NODE_NAME env var (the downward API's spec.nodeName)")
			}
			switch mode {
			case "extender":
			case "dra":
				cfg.FromClaims = true
			default:
				return fmt.Errorf("--mode=%q: must be extender or dra", mode)
			}
			client, err := kube.Client()
			if err != nil {
				return err
			}
			src, err := gpus.Open(nvmlSpec, cfg.NodeName)
			if err != nil {
				return err
			}
			defer src.Close()
			a, err := agent.New(cfg, client, src, regions.Decode, regions.Publisher{}, log)
			if err != nil {
				return err
			}
			ln, err := healthserver.Listen(healthserver.Flag, listen)
			if err != nil {
				return err
			}
			return a.Run(ctx, ln)
		})
	f := root.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&mode, "mode", "extender", "scheduling path whose record says what is assigned: extender (the vgpu.io/assignment annotation) or dra (allocated ResourceClaims and the node's ResourceSlice); see docs/dra.md")
	f.StringVar(&cfg.HostRoot, "host-root", contract.HostRoot, "vgpu's host directory as mounted in the monitor; regions are under its containers/")
	f.StringVar(&cfg.ProcRoot, "proc-root", "/proc", "the host's /proc as mounted in the monitor (a hostPath mount of /proc, or /proc with the host pid namespace)")
	healthserver.AddFlag(f, &listen, ":9394", "address of /healthz, /readyz and /metrics", "listen")
	f.StringVar(&nvmlSpec, "nvml", "", gpumock.FlagUsage)
	kube.AddFlags(f, 5, 10)
	f.DurationVar(&cfg.StaleGrace, "stale-grace", 5*time.Minute, "how long the region of a pod that no longer exists is kept before it is removed")
	f.DurationVar(&cfg.SweepInterval, "sweep-interval", 30*time.Second, "how often stale regions are looked for")
	f.DurationVar(&cfg.FeedInterval, "feed-interval", 100*time.Millisecond, "how often measured utilisation is written into the regions of containers with a cores limit")
	f.StringVar(&cfg.Namespace, "namespace", contract.DefaultNamespace, "namespace of the settings ConfigMap")
	f.StringVar(&cfg.SettingsConfigMap, "settings-configmap", contract.SettingsConfigMap, "name of the settings ConfigMap (its unenforcedAction says what to do with an unenforced container)")
	f.DurationVar(&cfg.AuditInterval, "audit-interval", 5*time.Second, "how often NVML's per-process GPU memory is compared with the containers' regions")
	f.DurationVar(&cfg.ConfirmAfter, "audit-confirm", 10*time.Second, "how long a discrepancy must last before the container is marked unenforced")
	f.DurationVar(&cfg.RegionGrace, "region-grace", 5*time.Minute, "how long a running container with limits may have no region before it is reported unenforced")
	f.Uint64Var(&toleranceMiB, "memory-tolerance-mib", 1024, "how many MiB more than libvgpu counts NVML may show for one process (its CUDA context) before the container is marked unenforced")
	daemoncmd.Main(root)
}
