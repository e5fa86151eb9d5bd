// Command monitor is vgpu's node agent: it exports per-GPU and per-container
// usage as Prometheus metrics, feeds libvgpu's compute throttle with the
// utilisation it measures, and removes the regions of pods that are gone.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/agent"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/gpus"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	var (
		cfg        agent.Config
		listen     string
		nvmlSpec   string
		kubeconfig string
		logLevel   string
		mode       string
		// toleranceMiB is cfg.MemoryTolerance in MiB.
		toleranceMiB uint64
	)
	root := &cobra.Command{
		Use:           "monitor",
		Short:         "vgpu node agent exporting per-GPU and per-container usage as Prometheus metrics",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.MemoryTolerance = toleranceMiB << 20
			if cfg.AuditInterval <= 0 {
				return fmt.Errorf("--audit-interval=%s: must be positive", cfg.AuditInterval)
			}
			if cfg.NodeName == "" {
				return fmt.Errorf("--node-name is empty: set it or the NODE_NAME env var (the downward API's spec.nodeName)")
			}
			var lvl zapcore.Level
			switch mode {
			case "extender":
			case "dra":
				cfg.FromClaims = true
			default:
				return fmt.Errorf("--mode=%q: must be extender or dra", mode)
			}
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level=%q: must be debug, info, warn or error", logLevel)
			}
			zc := zap.NewProductionConfig()
			zc.Level = zap.NewAtomicLevelAt(lvl)
			log, err := zc.Build()
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()

			rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return fmt.Errorf("kubernetes client config: %w", err)
			}
			client, err := kubernetes.NewForConfig(rc)
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
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("--listen=%s: %w", listen, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.Run(ctx, ln)
		},
	}
	f := root.Flags()
	f.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&mode, "mode", "extender", "scheduling path whose record says what is assigned: extender (the vgpu.io/assignment annotation) or dra (allocated ResourceClaims and the node's ResourceSlice); see docs/dra.md")
	f.StringVar(&cfg.HostRoot, "host-root", contract.HostRoot, "vgpu's host directory as mounted in the monitor; regions are under its containers/")
	f.StringVar(&cfg.ProcRoot, "proc-root", "/proc", "the host's /proc as mounted in the monitor (a hostPath mount of /proc, or /proc with the host pid namespace)")
	f.StringVar(&listen, "listen", ":9394", "address of the /metrics and /healthz endpoints")
	f.StringVar(&nvmlSpec, "nvml", "", gpumock.FlagUsage)
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster")
	f.DurationVar(&cfg.StaleGrace, "stale-grace", 5*time.Minute, "how long the region of a pod that no longer exists is kept before it is removed")
	f.DurationVar(&cfg.SweepInterval, "sweep-interval", 30*time.Second, "how often stale regions are looked for")
	f.DurationVar(&cfg.FeedInterval, "feed-interval", 100*time.Millisecond, "how often measured utilisation is written into the regions of containers with a cores limit")
	f.StringVar(&cfg.Namespace, "namespace", contract.DefaultNamespace, "namespace of the settings ConfigMap")
	f.StringVar(&cfg.SettingsConfigMap, "settings-configmap", contract.SettingsConfigMap, "name of the settings ConfigMap (its unenforcedAction says what to do with an unenforced container)")
	f.DurationVar(&cfg.AuditInterval, "audit-interval", 5*time.Second, "how often NVML's per-process GPU memory is compared with the containers' regions")
	f.DurationVar(&cfg.ConfirmAfter, "audit-confirm", 10*time.Second, "how long a discrepancy must last before the container is marked unenforced")
	f.DurationVar(&cfg.RegionGrace, "region-grace", 5*time.Minute, "how long a running container with limits may have no region before it is reported unenforced")
	f.Uint64Var(&toleranceMiB, "memory-tolerance-mib", 1024, "how many MiB more than libvgpu counts NVML may show for one process (its CUDA context) before the container is marked unenforced")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "monitor:", err)
		os.Exit(1)
	}
}
