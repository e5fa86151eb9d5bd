// Command webhook is vgpu's admission webhook that validates vGPU requests and routes GPU pods to the vgpu scheduler.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vgpu-io/vgpu/cmd/webhook/internal/app"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	o := app.Options{}
	var logLevel string
	root := &cobra.Command{
		Use:           "webhook",
		Short:         "vgpu admission webhook that validates vGPU requests and routes GPU pods to the vgpu scheduler",
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
	f := root.Flags()
	f.StringVar(&o.Listen, "listen", ":9443", "address of the HTTPS admission server (/mutate, /validate)")
	f.StringVar(&o.ProbeListen, "probe-listen", ":8080", "address of the plain HTTP server for /healthz, /readyz and /metrics; empty disables it")
	f.StringVar(&o.CertFile, "tls-cert-file", "", "serving certificate (PEM, chain allowed); reloaded when it changes")
	f.StringVar(&o.KeyFile, "tls-key-file", "", "serving key (PEM); reloaded when it changes")
	f.StringVar(&o.CAFile, "ca-file", "", "CA of the serving certificate, for --patch-ca-bundle and --register-url")
	f.StringVar(&o.SelfSignedDir, "self-signed-dir", "", "without --tls-cert-file: keep a generated CA and serving certificate in this directory (created on first start)")
	f.StringSliceVar(&o.SelfSignedHosts, "self-signed-hosts", []string{"vgpu-webhook." + contract.DefaultNamespace + ".svc", "localhost", "127.0.0.1"},
		"DNS names and IPs of the generated serving certificate; the first is its subject")
	f.StringVar(&o.SchedulerName, "scheduler-name", contract.DefaultSchedulerName, "schedulerName given to vgpu pods that name no scheduler")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then the in-cluster service account")
	f.Float32Var(&o.QPS, "kube-api-qps", 20, "queries per second to the API server")
	f.IntVar(&o.Burst, "kube-api-burst", 40, "burst of queries to the API server")
	f.StringVar(&o.RegisterURL, "register-url", "", "create or update the webhook configurations to call this base URL (e.g. https://127.0.0.1:9443) with the CA")
	f.BoolVar(&o.PatchCABundle, "patch-ca-bundle", false, "set the caBundle of the existing webhook configurations to the CA at start")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")

	var dir string
	var hosts []string
	caCmd := &cobra.Command{
		Use:   "ca-bundle",
		Short: "generate (or reuse) the self-signed CA and serving certificate in --dir and print the caBundle (base64)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := app.CABundle(dir, hosts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), b)
			return nil
		},
	}
	caCmd.Flags().StringVar(&dir, "dir", "", "directory of tls.crt, tls.key and ca.crt")
	caCmd.Flags().StringSliceVar(&hosts, "hosts", []string{"vgpu-webhook." + contract.DefaultNamespace + ".svc", "localhost", "127.0.0.1"}, "DNS names and IPs of the serving certificate")
	_ = caCmd.MarkFlagRequired("dir")
	root.AddCommand(caCmd)

	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
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
