// Command extender is vgpu's kube-scheduler extender: GPU-aware filter, prioritize and bind.
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/app"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	o := app.Options{}
	var logLevel string
	root := &cobra.Command{
		Use:           "extender",
		Short:         "vgpu kube-scheduler extender: GPU-aware filter, prioritize and bind",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return app.Run(ctx, o, log)
		},
	}
	defaultListen := "127.0.0.1:8888"
	if u, err := url.Parse(config.DefaultURL); err == nil {
		defaultListen = u.Host
	}
	f := root.Flags()
	f.StringVar(&o.Listen, "listen", defaultListen, "address for kube-scheduler's calls (/filter, /prioritize, /bind); keep it on loopback")
	f.StringVar(&o.HealthListen, "health-listen", ":8889", "address for /healthz, /readyz and /metrics; empty serves them on --listen")
	f.StringVar(&o.Namespace, "namespace", contract.DefaultNamespace, "namespace of the settings ConfigMap")
	f.StringVar(&o.SettingsConfigMap, "settings-configmap", contract.SettingsConfigMap, "name of the settings ConfigMap (reloaded on change)")
	f.StringVar(&o.SchedulerName, "scheduler-name", contract.DefaultSchedulerName, "schedulerName of vgpu pods: only their assignments are booked")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then the in-cluster service account")
	f.Float32Var(&o.QPS, "kube-api-qps", 500, "queries per second to the API server (a scheduler binds in bursts)")
	f.IntVar(&o.Burst, "kube-api-burst", 1000, "burst of queries to the API server")
	f.BoolVar(&o.Profiling, "profiling", false, "serve Go's pprof profiles under /debug/pprof/ on --health-listen")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "extender:", err)
		os.Exit(1)
	}
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	return cfg.Build()
}
