// Command extender is vgpu's kube-scheduler extender: GPU-aware filter, prioritize and bind.
package main

import (
	"context"
	"net/url"

	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/cmd/extender/internal/app"
	"github.com/vgpu-io/vgpu/internal/daemoncmd"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
	"github.com/vgpu-io/vgpu/lib/contract"
)

func main() {
	o := app.Options{Kube: kubeclient.Options{Component: "extender"}}
	root := daemoncmd.New("extender", "vgpu kube-scheduler extender: GPU-aware filter, prioritize and bind",
		func(ctx context.Context, log *zap.Logger) error { return app.Run(ctx, o, log) })
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
	daemoncmd.Main(root)
}
