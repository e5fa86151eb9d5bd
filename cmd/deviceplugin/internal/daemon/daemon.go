// Package daemon wires the device plugin's parts together: NVML discovery
// and health, the settings watcher, the node inventory publisher, the pod
// resolver, libvgpu installation and the kubelet plugin server.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/containerspec"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/discovery"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draprepare"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/draslice"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/install"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/inventory"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/kubeletplugin"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/metrics"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/podresolver"
	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/settingswatch"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/lib/version"
)

// Config is what the command line sets.
type Config struct {
	NodeName string
	// NVML is "" for the real library or "mock:<model>[:<count>]".
	NVML              string
	SocketDir         string
	SocketName        string
	HostRoot          string
	LibvgpuSource     string
	SysfsRoot         string
	Namespace         string
	SettingsConfigMap string
	// MetricsAddress serves /healthz, /readyz and /metrics; "" serves
	// nothing.
	MetricsAddress    string
	IgnoredXids       []uint64
	AdvertiseCapacity bool
	// Mode is ModeDevicePlugin or ModeDRA (docs/dra.md).
	Mode string
	// DRASockets and CDIDir place the kubelet's DRA service (DRA mode).
	DRASockets draprepare.Sockets
	CDIDir     string
}

// The node agent's two modes, one per scheduling path (docs/dra.md).
const (
	ModeDevicePlugin = "device-plugin"
	ModeDRA          = "dra"
)

// Deps are what tests replace.
type Deps struct {
	Client kubernetes.Interface
	// NVML, when set, is used instead of what Config.NVML names.
	NVML     nvml.Interface
	Registry *prometheus.Registry
	Log      *zap.Logger
	// Ready, when set, is called once the plugin serves.
	Ready func()
}

// OpenNVML returns the NVML that cfg.NVML names, initialised.
func OpenNVML(spec, node string) (nvml.Interface, error) {
	lib, err := gpumock.Library(spec, node)
	if err != nil {
		return nil, err
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML cannot start (%v): this node has no NVIDIA GPU, or its driver (libnvidia-ml.so.1) is not installed or not visible to the plugin; "+
			"to simulate a GPU node, run with --nvml=mock:<model> (models: %s)", ret, strings.Join(gpumock.Models(), ", "))
	}
	return lib, nil
}

// Run runs the device plugin until ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	if cfg.NodeName == "" {
		return errors.New("the node name is empty: set --node-name or NODE_NAME (the downward API's spec.nodeName)")
	}
	lib := deps.NVML
	if lib == nil {
		var err error
		if lib, err = OpenNVML(cfg.NVML, cfg.NodeName); err != nil {
			return err
		}
		defer lib.Shutdown()
	}
	gpus, err := discover(lib, cfg, deps.Log)
	if err != nil {
		return err
	}
	var serving atomic.Bool
	health := healthserver.New(deps.Registry, func() error {
		if !serving.Load() {
			return errors.New("not serving the kubelet yet")
		}
		return nil
	})
	m := metrics.New(health.Registry)
	state := gpustate.New(gpus, settings.Default())
	host, err := installLibvgpu(cfg, deps.Log)
	if err != nil {
		return err
	}
	if host.LibDir != "" {
		host.Keeper = &containerspec.LibKeeper{
			Reinstall: func() error {
				_, err := installLib(cfg)
				return err
			},
			Reinstalled: func(damage error) {
				m.LibvgpuReinstalls.Inc()
				deps.Log.Warn("libvgpu was missing on the host; reinstalled it from the device plugin's image", zap.Error(damage))
			},
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Settings first: the first inventory and device list use them.
	if err := watchSettings(ctx, cfg, deps, state); err != nil {
		return err
	}
	if cfg.Mode == ModeDRA {
		return runDRA(ctx, cfg, deps, lib, gpus, state, m, health, &serving, host)
	}
	// One GPU, one booking: a slice left from DRA mode goes first.
	if n, err := draslice.DeleteSlices(ctx, deps.Client, cfg.NodeName); err != nil {
		deps.Log.Warn("cannot check for ResourceSlices left from DRA mode", zap.Error(err))
	} else if n > 0 {
		deps.Log.Info("deleted ResourceSlices left from DRA mode", zap.Int("slices", n))
	}
	resolver, nodes, kick, err := watchNodeAndPods(ctx, cfg, deps)
	if err != nil {
		return err
	}
	go watchHealth(ctx, lib, gpus, cfg.IgnoredXids, state, m, deps.Log)
	pub := &inventory.Publisher{Node: cfg.NodeName, Client: deps.Client, Nodes: nodes, State: state,
		Metrics: m, Log: deps.Log, AdvertiseCapacity: cfg.AdvertiseCapacity}
	go pub.Run(ctx, kick)

	plugin := kubeletplugin.New(kubeletplugin.Config{SocketDir: cfg.SocketDir, SocketName: cfg.SocketName, Host: host},
		state, resolver, m, deps.Log)
	return serve(ctx, cfg, deps, health, &serving, plugin.Run)
}

// serve runs the health server (on --metrics-address, when set) beside the
// agent's services, says the agent is ready, and returns when ctx ends or
// when any of them fails.
func serve(ctx context.Context, cfg Config, deps Deps, health *healthserver.Server, serving *atomic.Bool,
	services ...func(context.Context) error) error {
	errs := make(chan error, len(services)+1)
	if cfg.MetricsAddress != "" {
		ln, err := healthserver.Listen(healthserver.Flag, cfg.MetricsAddress)
		if err != nil {
			return err
		}
		go func() { errs <- healthserver.Serve(ctx, ln, health.Mux(), deps.Log) }()
	}
	for _, run := range services {
		go func() { errs <- run(ctx) }()
	}
	serving.Store(true)
	if deps.Ready != nil {
		deps.Ready()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

// discover lists the node's GPUs; a node without any has nothing to do here.
func discover(lib nvml.Interface, cfg Config, log *zap.Logger) ([]device.GPU, error) {
	gpus, err := discovery.Discover(lib, cfg.SysfsRoot)
	if errors.Is(err, discovery.ErrNoGPU) {
		return nil, fmt.Errorf("%w: nothing to share on node %s; run the plugin only on GPU nodes (label %s)", err, cfg.NodeName, "vgpu.io/gpu-node")
	}
	if err != nil {
		return nil, fmt.Errorf("GPU discovery: %w", err)
	}
	for _, g := range gpus {
		log.Info("found GPU", zap.Int("index", g.Index), zap.String("gpu", g.UUID), zap.String("model", g.Model),
			zap.Int64("memoryMiB", g.MemoryMiB), zap.Int("numaNode", g.NUMANode))
	}
	return gpus, nil
}

// installLibvgpu copies libvgpu onto the host; without it containers still
// get their GPUs, but no limits, and the log says so.
func installLibvgpu(cfg Config, log *zap.Logger) (containerspec.Host, error) {
	host := containerspec.Host{ContainersDir: filepath.Join(cfg.HostRoot, "containers")}
	libDir, err := installLib(cfg)
	switch {
	case errors.Is(err, install.ErrSourceMissing):
		log.Warn("libvgpu is not in the plugin image: containers get their GPUs but no memory or compute limits (no libvgpu mount, no LD_PRELOAD)",
			zap.String("source", cfg.LibvgpuSource))
	case err != nil:
		return host, fmt.Errorf("installing libvgpu: %w", err)
	default:
		host.LibDir = libDir
		log.Info("installed libvgpu", zap.String("dir", libDir))
	}
	return host, nil
}

func installLib(cfg Config) (string, error) {
	return install.Install(cfg.LibvgpuSource, filepath.Join(cfg.HostRoot, "lib"), version.Version)
}

// watchSettings applies the settings ConfigMap to state, waiting a while for
// its first reading.
func watchSettings(ctx context.Context, cfg Config, deps Deps, state *gpustate.State) error {
	w, err := settingswatch.New(deps.Client, cfg.Namespace, cfg.SettingsConfigMap, deps.Log,
		func(s settings.Settings) { state.SetSettings(s) })
	if err != nil {
		return err
	}
	w.Start(ctx.Done())
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), w.HasSynced) {
		deps.Log.Warn("settings ConfigMap not readable yet; starting with the defaults",
			zap.String("configMap", cfg.Namespace+"/"+cfg.SettingsConfigMap))
	}
	return nil
}

// watchNodeAndPods starts the informers of this node's pods (for the pod
// resolver) and of its Node (whose every change kicks the inventory
// publisher), and waits for both.
func watchNodeAndPods(ctx context.Context, cfg Config, deps Deps) (*podresolver.Resolver, corelisters.NodeLister, <-chan struct{}, error) {
	podFactory := informers.NewSharedInformerFactoryWithOptions(deps.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	podInformer := podFactory.Core().V1().Pods()
	resolver := podresolver.New(cfg.NodeName, deps.Client, podInformer.Lister(), deps.Log)
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		// A pod's add is its binding, in the order the kubelet sees it.
		AddFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				resolver.Observe(pod)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			// The region directories stay: the monitor reads them last
			// and removes them after its grace period.
			if pod, ok := obj.(*corev1.Pod); ok {
				resolver.Forget(pod.UID)
			}
		},
	}); err != nil {
		return nil, nil, nil, err
	}

	nodeFactory := informers.NewSharedInformerFactoryWithOptions(deps.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.NodeName).String()
		}))
	nodeInformer := nodeFactory.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := nodeInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) },
	}); err != nil {
		return nil, nil, nil, err
	}
	podFactory.Start(ctx.Done())
	nodeFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced, nodeInformer.Informer().HasSynced) {
		return nil, nil, nil, ctx.Err()
	}
	return resolver, nodeInformer.Lister(), kick, nil
}

// watchHealth marks GPUs unhealthy on NVML's critical Xid events. Without
// events health is unknown, and the plugin keeps serving what it knows.
func watchHealth(ctx context.Context, lib nvml.Interface, gpus []device.GPU, ignoredXids []uint64, state *gpustate.State, m *metrics.Metrics, log *zap.Logger) {
	uuids := make([]string, len(gpus))
	for i, g := range gpus {
		uuids[i] = g.UUID
	}
	err := discovery.WatchHealth(ctx, lib, uuids, ignoredXids, func(ev discovery.Event) {
		if state.SetHealthy(ev.UUID, false) {
			m.UnhealthyGPUs.Inc()
			log.Error("GPU marked unhealthy", zap.String("gpu", ev.UUID), zap.Uint64("xid", ev.Xid), zap.Uint64("eventType", ev.Type))
		}
	}, func(msg, uuid string, err error) {
		log.Warn(msg, zap.String("gpu", uuid), zap.Error(err))
	})
	if err != nil {
		log.Error("GPU health watch stopped", zap.Error(err))
	}
}
