// Package app wires the extender: informers into the ledger, settings,
// requeue nudges, the scheduler-facing server and the health/metrics server.
package app

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/tools/cache"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/binder"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/handler"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/hosts"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/metrics"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/requeue"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/state"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
	"github.com/vgpu-io/vgpu/internal/settingswatch"
)

// Options are the extender's flags.
type Options struct {
	// Listen serves kube-scheduler (filter, prioritize, bind).
	Listen string
	// MetricsAddress serves /healthz, /readyz and /metrics; empty: on
	// Listen.
	MetricsAddress string
	// Namespace and SettingsConfigMap locate the vgpu-settings ConfigMap.
	Namespace, SettingsConfigMap string
	// SchedulerName selects the pods whose assignments are booked.
	SchedulerName string
	Kube          kubeclient.Options
	// Profiling serves net/http/pprof under /debug/pprof/ on the health
	// address.
	Profiling bool
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options, log *zap.Logger) error {
	cs, err := o.Kube.Client()
	if err != nil {
		return err
	}
	var ready func() bool
	health := healthserver.New(nil, func() error {
		if !ready() {
			return errors.New("informers not synced: the GPU ledger is being built")
		}
		return nil
	})
	reg := health.Registry

	nudger := requeue.New(cs, log.Named("requeue"))
	st, err := state.New(cs, o.SchedulerName, log.Named("state"), state.Hooks{Freed: nudger.Freed, Settled: nudger.Settled})
	if err != nil {
		return err
	}
	m := metrics.New(reg, st.Ledger)
	nudger.Nudged = m.Nudges.Inc
	sw, err := settingswatch.New(cs, o.Namespace, o.SettingsConfigMap, log.Named("settings"), nil)
	if err != nil {
		return err
	}
	hs, err := hosts.New(cs)
	if err != nil {
		return err
	}
	ready = func() bool { return st.HasSynced() && sw.HasSynced() && hs.HasSynced() }
	h := &handler.Handler{
		Ledger:   st.Ledger,
		Mix:      st.Mix,
		Host:     hs.Free,
		Ready:    ready,
		Settings: sw.Get,
		Binder:   &binder.Binder{CS: cs, State: st, Settings: sw.Get, Host: hs.Free, Log: log.Named("bind")},
		Rejected: nudger.Rejected,
		Metrics:  m,
		Log:      log,
	}

	servers, err := o.listen(h, health)
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	start := time.Now()
	st.Start(ctx.Done())
	hs.Start(ctx.Done())
	sw.Start(ctx.Done())
	g.Go(func() error {
		nudger.Run(ctx)
		return nil
	})
	g.Go(func() error {
		// Say when the ledger is built: until then filters answer errors.
		if !cache.WaitForCacheSync(ctx.Done(), st.HasSynced, sw.HasSynced, hs.HasSynced) {
			return nil
		}
		log.Info("ledger built from the API server", zap.Duration("took", time.Since(start)),
			zap.Int("pods", st.Ledger.PodCount()), zap.Int("gpuNodes", len(st.Ledger.NodeNames())), zap.Any("settings", sw.Get()))
		return nil
	})
	for ln, h := range servers {
		g.Go(func() error { return healthserver.Serve(ctx, ln, h, log) })
	}
	g.Go(func() error {
		<-ctx.Done()
		st.Shutdown()
		hs.Shutdown()
		sw.Shutdown()
		return nil
	})
	return g.Wait()
}

// listen opens kube-scheduler's address and, when it is separate, the
// health and metrics address, and returns what each serves.
func (o Options) listen(h *handler.Handler, health *healthserver.Server) (map[net.Listener]http.Handler, error) {
	mux := http.NewServeMux()
	h.Routes(mux)
	healthMux := mux
	if o.MetricsAddress != "" {
		healthMux = http.NewServeMux()
	}
	health.Register(healthMux)
	if o.Profiling {
		healthMux.HandleFunc("/debug/pprof/", pprof.Index)
		healthMux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		healthMux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	ln, err := healthserver.Listen("listen", o.Listen)
	if err != nil {
		return nil, err
	}
	servers := map[net.Listener]http.Handler{ln: mux}
	if o.MetricsAddress != "" {
		hl, err := healthserver.Listen(healthserver.Flag, o.MetricsAddress)
		if err != nil {
			ln.Close()
			return nil, err
		}
		servers[hl] = healthMux
	}
	return servers, nil
}
