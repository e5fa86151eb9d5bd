package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/containerspec"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draprepare"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draslice"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/metrics"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/lib/device"
)

// runDRA is the node agent on the DRA path (docs/dra.md): it publishes the
// node's ResourceSlice and never registers nvidia.com/gpu with the kubelet,
// so kube-scheduler cannot hand the same GPU out on the extender path too.
func runDRA(ctx context.Context, cfg Config, deps Deps, lib nvml.Interface, gpus []device.GPU,
	state *gpustate.State, m *metrics.Metrics, health *healthserver.Server, serving *atomic.Bool, host containerspec.Host) error {
	log := deps.Log
	if err := draslice.RetireDevicePlugin(ctx, deps.Client, cfg.NodeName, cfg.AdvertiseCapacity); err != nil {
		return err
	}
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	// Watch the slice itself, so one deleted or edited by hand comes back.
	f := informers.NewSharedInformerFactoryWithOptions(deps.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", draslice.SliceName(cfg.NodeName)).String()
		}))
	inf := f.Resource().V1().ResourceSlices().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke,
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	go watchHealth(ctx, lib, gpus, cfg.IgnoredXids, state, m, log)
	pub := &draslice.Publisher{Node: cfg.NodeName, Client: deps.Client, State: state, Log: log}
	go pub.Run(ctx, kick)
	fatal := make(chan error, 1)
	drv := &draprepare.Driver{Node: cfg.NodeName, State: state, Log: log, CDIDir: cfg.CDIDir, Fatal: fatal,
		Host: containerspec.Host{ContainersDir: filepath.Join(cfg.HostRoot, "claims"), LibDir: host.LibDir, Keeper: host.Keeper}}
	helper, err := draprepare.Serve(ctx, drv, deps.Client, cfg.DRASockets)
	if err != nil {
		return fmt.Errorf("kubelet DRA service: %w", err)
	}
	defer helper.Stop()
	log.Info("serving in DRA mode: no device plugin registration", zap.String("node", cfg.NodeName),
		zap.String("registryDir", cfg.DRASockets.RegistryDir), zap.String("pluginDir", cfg.DRASockets.PluginDir), zap.String("cdiDir", cfg.CDIDir))
	return serve(ctx, cfg, deps, health, serving, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case err := <-fatal:
			return fmt.Errorf("kubelet DRA service: %w", err)
		}
	})
}
