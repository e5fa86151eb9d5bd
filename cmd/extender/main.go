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

	"github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/app"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
	"github.com/vgpu-io/vgpu/internal/logging"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	o := app.Options{Kube: kubeclient.Options{Component: "extender"}}
	logOpts := logging.Options{}
	root := &cobra.Command{
		Use:           "extender",
		Short:         "vgpu kube-scheduler extender: GPU-aware filter, prioritize and bind",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logOpts.Build()
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
	healthserver.AddFlag(f, &o.MetricsAddress, ":8889", "address of /healthz, /readyz and /metrics; empty serves them on --listen", "health-listen")
	f.StringVar(&o.Namespace, "namespace", contract.DefaultNamespace, "namespace of the settings ConfigMap")
	f.StringVar(&o.SettingsConfigMap, "settings-configmap", contract.SettingsConfigMap, "name of the settings ConfigMap (reloaded on change)")
	f.StringVar(&o.SchedulerName, "scheduler-name", contract.DefaultSchedulerName, "schedulerName of vgpu pods: only their assignments are booked")
	// A scheduler binds in bursts.
	o.Kube.AddFlags(f, 500, 1000)
	f.BoolVar(&o.Profiling, "profiling", false, "serve Go's pprof profiles under /debug/pprof/ on --metrics-address")
	logOpts.AddFlags(f)
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "extender:", err)
		os.Exit(1)
	}
}
