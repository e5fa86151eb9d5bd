// Command webhook is vgpu's admission webhook that validates vGPU requests and routes GPU pods to the vgpu scheduler.
package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/cmd/webhook/config"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/app"
	"github.com/vgpu-io/vgpu/internal/daemoncmd"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
	"github.com/vgpu-io/vgpu/lib/contract"
)

func main() {
	o := app.Options{Kube: kubeclient.Options{Component: "webhook"}}
	root := daemoncmd.New("webhook", "vgpu admission webhook that validates vGPU requests and routes GPU pods to the vgpu scheduler",
		func(ctx context.Context, log *zap.Logger) error { return app.Run(ctx, o, log) })
	f := root.Flags()
	f.StringVar(&o.Listen, "listen", ":8443", "address of the HTTPS server of /mutate and /validate")
	healthserver.AddFlag(f, &o.MetricsAddress, "", "address of /healthz, /readyz and /metrics (plain HTTP); empty serves them on --listen")
	f.StringVar(&o.CertFile, "tls-cert-file", "", "serving certificate (PEM, chain allowed); reloaded when it changes")
	f.StringVar(&o.KeyFile, "tls-key-file", "", "serving key (PEM); reloaded when it changes")
	f.StringVar(&o.CAFile, "ca-file", "", "CA of --tls-cert-file, written into the caBundle of --webhook-configuration")
	f.BoolVar(&o.SelfSigned, "self-signed", false, "generate a CA and serving certificate instead of --tls-cert-file, and write the CA into the caBundle")
	f.StringVar(&o.CertSecret, "cert-secret", "", "with --self-signed: keep the CA and certificate in this Secret (namespace/name), created if missing and shared by replicas")
	f.StringVar(&o.SelfSignedDir, "self-signed-dir", "", "with --self-signed and no --cert-secret: keep them in this directory (tls.crt, tls.key, ca.crt)")
	f.StringVar(&o.Service, "service", "", "Service (namespace/name) whose DNS names the generated certificate is valid for")
	f.StringSliceVar(&o.ExtraHosts, "self-signed-hosts", []string{"localhost", "127.0.0.1"}, "more DNS names and IPs for the generated certificate")
	f.StringVar(&o.WebhookConfiguration, "webhook-configuration", config.ConfigurationName,
		"name of the Mutating- and ValidatingWebhookConfiguration whose caBundle is set to the CA at start; empty leaves them alone")
	f.StringVar(&o.RegisterURL, "register-url", "", "create or update the webhook configurations to call this base URL (e.g. https://127.0.0.1:8443), for local clusters")
	f.StringVar(&o.SchedulerName, "scheduler-name", contract.DefaultSchedulerName, "schedulerName given to vgpu pods that name no scheduler")
	f.StringVar(&o.Mode, "mode", app.ModeExtender, "scheduling path: extender (route vgpu pods to --scheduler-name) or dra (turn their limits into ResourceClaims); see docs/dra.md")
	f.StringVar(&o.DRASchedulerName, "dra-scheduler-name", "", "with --mode=dra: schedulerName given to the pods turned into claims that name no scheduler, a profile of the cluster's kube-scheduler tuned for DRA pods (docs/dra.md); empty: the default scheduler")
	o.Kube.AddFlags(f, 20, 40)

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

	daemoncmd.Main(root)
}
