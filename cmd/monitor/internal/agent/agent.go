// Package agent wires the monitor together: the node's pod cache, NVML, the
// region reader, the Prometheus collector, the audit of NVML against the
// regions and what it does about findings, the stale-region sweeper and the
// health and metrics server.
package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/vgpu-io/vgpu/cmd/monitor/internal/audit"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/cleanup"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/feed"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/metrics"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/pods"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/procs"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/regions"
	"github.com/vgpu-io/vgpu/cmd/monitor/internal/respond"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/settingswatch"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// Config is what the flags set.
type Config struct {
	NodeName string
	// FromClaims reads assignments from allocated ResourceClaims and the
	// inventory from the node's ResourceSlice (the DRA path, docs/dra.md).
	FromClaims bool
	// HostRoot is vgpu's host directory as the monitor sees it; the regions
	// are in its containers/ subdirectory.
	HostRoot string
	// ProcRoot is the host's /proc as the monitor sees it.
	ProcRoot string
	// StaleGrace is how long a region outlives its pod.
	StaleGrace    time.Duration
	SweepInterval time.Duration
	// FeedInterval is how often utilisation is written into the regions of
	// containers with a cores limit.
	FeedInterval time.Duration
	// Namespace and SettingsConfigMap name the settings ConfigMap.
	Namespace, SettingsConfigMap string
	// AuditInterval is how often NVML is compared with the regions;
	// ConfirmAfter how long a finding must hold before it counts.
	AuditInterval, ConfirmAfter time.Duration
	// RegionGrace is how long a running container with limits may have no
	// region.
	RegionGrace time.Duration
	// MemoryTolerance is how much more than libvgpu counts NVML may show
	// for a process (its CUDA context).
	MemoryTolerance uint64
}

// Agent is a configured monitor.
type Agent struct {
	cfg      Config
	client   kubernetes.Interface
	log      *zap.Logger
	node     *pods.Node
	registry *prometheus.Registry
	sweeper  *cleanup.Sweeper
	feeder   *feed.Feeder
	auditor  *audit.Auditor
	settings *settingswatch.Watcher
	events   record.EventBroadcaster
}

// New builds an agent reading GPUs from gpus, decoding regions with decode
// and feeding utilisation through w (nil: no feed).
func New(cfg Config, client kubernetes.Interface, gpus metrics.GPUReader, decode regions.Decoder, w feed.Writer, log *zap.Logger) (*Agent, error) {
	var opts []pods.Option
	if cfg.FromClaims {
		opts = append(opts, pods.FromClaims())
	}
	node := pods.New(client, cfg.NodeName, log, opts...)
	dir := filepath.Join(cfg.HostRoot, "containers")
	reg := prometheus.NewRegistry()
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"node": cfg.NodeName}, reg)
	removed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: metrics.Prefix + "monitor_regions_removed_total",
		Help: "Region directories removed because their pod no longer exists.",
	})
	evictions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metrics.Prefix + "monitor_evictions_total",
		Help: "Evictions of pods whose GPU limits are not enforced (unenforcedAction=evict), by result: evicted, refused (a disruption budget; retried), failed.",
	}, []string{"result"})
	reader := regions.NewReader(decode, log)
	owners := procs.Resolver{Root: cfg.ProcRoot}
	watcher, err := settingswatch.New(client, cfg.Namespace, cfg.SettingsConfigMap, log.Named("settings"), nil)
	if err != nil {
		return nil, err
	}
	events := record.NewBroadcaster()
	auditor := &audit.Auditor{
		Dir:          dir,
		GPUs:         gpus,
		Pods:         node,
		Regions:      reader,
		Owners:       owners,
		Options:      audit.Options{Tolerance: cfg.MemoryTolerance, RegionGrace: cfg.RegionGrace},
		ConfirmAfter: cfg.ConfirmAfter,
		Log:          log,
		Respond: &respond.Responder{
			Client:    client,
			Recorder:  events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "vgpu-monitor", Host: cfg.NodeName}),
			Action:    func() settings.UnenforcedAction { return watcher.Get().UnenforcedAction },
			Log:       log,
			Evictions: evictions,
		},
	}
	// Prepared claims' regions (docs/contract.md#on-the-dra-path): fed,
	// reported and audited; unprepare removes them, so the sweeper leaves
	// them alone.
	var claims regions.Claims
	if cfg.FromClaims {
		claims = regions.Claims{Dir: filepath.Join(cfg.HostRoot, "claims"), Users: node.ClaimUsers}
		auditor.Claims = claims
	}
	coll := &metrics.Collector{
		Claims:     claims,
		GPUs:       gpus,
		Pods:       node,
		Procs:      owners,
		RegionsDir: dir,
		Regions:    reader,
		Audit:      auditor,
		Log:        log,
	}
	for _, c := range []prometheus.Collector{coll, removed, evictions} {
		if err := wrapped.Register(c); err != nil {
			return nil, err
		}
	}
	a := &Agent{
		cfg:      cfg,
		client:   client,
		log:      log,
		node:     node,
		registry: reg,
		sweeper:  &cleanup.Sweeper{Dir: dir, Pods: node, Grace: cfg.StaleGrace, Log: log, Removed: removed},
		auditor:  auditor,
		settings: watcher,
		events:   events,
	}
	if w != nil {
		a.feeder = &feed.Feeder{Dir: dir, GPUs: gpus, Regions: reader, Procs: owners, Writer: w, Log: log, Reread: time.Second}
		a.feeder.Claims = claims
	}
	return a, nil
}

// Run serves on ln until ctx ends. The HTTP server starts at once so that
// /readyz can say what the monitor waits for.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	health := healthserver.New(a.registry, a.ready)
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	errc := make(chan error, 1)
	go func() { errc <- healthserver.Serve(serveCtx, ln, health.Mux(), a.log) }()

	if err := a.node.Run(ctx); err != nil {
		stopServing()
		<-errc
		if ctx.Err() != nil {
			return nil // stopped while waiting: not a failure
		}
		return err
	}
	a.settings.Start(ctx.Done())
	a.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: a.client.CoreV1().Events("")})
	defer a.events.Shutdown()
	go a.auditor.Run(ctx, a.cfg.AuditInterval)
	go a.sweeper.Run(ctx, a.cfg.SweepInterval)
	if a.feeder != nil {
		go a.feeder.Run(ctx, a.cfg.FeedInterval)
	}
	return <-errc
}

func (a *Agent) ready() error {
	if !a.node.Synced() {
		return errors.New("waiting for the pod and node caches of " + a.cfg.NodeName)
	}
	return nil
}
