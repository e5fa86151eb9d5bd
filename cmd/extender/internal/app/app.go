// Package app wires the extender: informers into the ledger, settings,
// requeue nudges, the scheduler-facing server and the health/metrics server.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vgpu-io/vgpu/cmd/extender/internal/binder"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/handler"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/hosts"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/metrics"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/requeue"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/settings"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/state"
)

// Options are the extender's flags.
type Options struct {
	// Listen serves kube-scheduler (filter, prioritize, bind).
	Listen string
	// HealthListen serves /healthz, /readyz and /metrics; empty: on Listen.
	HealthListen string
	// Namespace and SettingsConfigMap locate the vgpu-settings ConfigMap.
	Namespace, SettingsConfigMap string
	// SchedulerName selects the pods whose assignments are booked.
	SchedulerName string
	Kubeconfig    string
	QPS           float32
	Burst         int
	// Profiling serves net/http/pprof under /debug/pprof/ on the health
	// address.
	Profiling bool
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options, log *zap.Logger) error {
	cs, err := client(o.Kubeconfig, o.QPS, o.Burst)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	nudger := requeue.New(cs, log.Named("requeue"))
	st, err := state.New(cs, o.SchedulerName, log.Named("state"), state.Hooks{Freed: nudger.Freed, Settled: nudger.Settled})
	if err != nil {
		return err
	}
	m := metrics.New(reg, st.Ledger)
	nudger.Nudged = m.Nudges.Inc
	sw, settingsFactory, err := settings.New(cs, o.Namespace, o.SettingsConfigMap, log.Named("settings"))
	if err != nil {
		return err
	}
	hs, err := hosts.New(cs)
	if err != nil {
		return err
	}
	ready := func() bool { return st.HasSynced() && sw.HasSynced() && hs.HasSynced() }
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

	mux := http.NewServeMux()
	h.Routes(mux)
	health := mux
	if o.HealthListen != "" {
		health = http.NewServeMux()
	}
	health.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	health.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "informers not synced: the GPU ledger is being built", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	health.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if o.Profiling {
		health.HandleFunc("/debug/pprof/", pprof.Index)
		health.HandleFunc("/debug/pprof/profile", pprof.Profile)
		health.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	servers := []*http.Server{{Addr: o.Listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	if o.HealthListen != "" {
		servers = append(servers, &http.Server{Addr: o.HealthListen, Handler: health, ReadHeaderTimeout: 10 * time.Second})
	}
	listeners := make([]net.Listener, len(servers))
	for i, s := range servers {
		if listeners[i], err = net.Listen("tcp", s.Addr); err != nil {
			return err
		}
	}

	g, ctx := errgroup.WithContext(ctx)
	start := time.Now()
	st.Start(ctx.Done())
	hs.Start(ctx.Done())
	settingsFactory.Start(ctx.Done())
	g.Go(func() error {
		nudger.Run(ctx)
		return nil
	})
	g.Go(func() error {
		// Say when the ledger is built: until then filters answer errors.
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for !ready() {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		log.Info("ledger built from the API server", zap.Duration("took", time.Since(start)),
			zap.Int("pods", st.Ledger.PodCount()), zap.Int("gpuNodes", len(st.Ledger.NodeNames())), zap.Any("settings", sw.Get()))
		return nil
	})
	for i, s := range servers {
		g.Go(func() error {
			log.Info("serving", zap.String("address", listeners[i].Addr().String()))
			if err := s.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(shutdown)
		}
		st.Shutdown()
		hs.Shutdown()
		settingsFactory.Shutdown()
		return nil
	})
	return g.Wait()
}

// client builds a clientset from a kubeconfig path, $KUBECONFIG, or the
// in-cluster service account, with a scheduler's client limits.
func client(kubeconfig string, qps float32, burst int) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = qps, burst
	cfg.UserAgent = "vgpu-extender"
	// Every object the extender reads or writes is a built-in type, and
	// protobuf costs the API server and this process a fraction of JSON to
	// encode and decode: each pod event of the cluster's vgpu pods passes
	// through here (kube-scheduler's own client does the same).
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return kubernetes.NewForConfig(cfg)
}
