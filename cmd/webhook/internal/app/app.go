// Package app wires the webhook: serving certificate, Node informer,
// admission handlers and one HTTPS server for reviews, probes and metrics.
package app

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/cmd/webhook/config"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/admission"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/certs"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/drainventory"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/inventory"
	"github.com/vgpu-io/vgpu/internal/healthserver"
	"github.com/vgpu-io/vgpu/internal/kubeclient"
)

// Options are the webhook's flags.
type Options struct {
	// Listen serves the API server's reviews over HTTPS.
	Listen string
	// MetricsAddress serves /healthz, /readyz and /metrics over HTTP;
	// empty: on Listen.
	MetricsAddress string
	// CertFile and KeyFile are served and reloaded when they change.
	CertFile, KeyFile string
	// CAFile is the CA of CertFile, for the caBundle.
	CAFile string
	// SelfSigned generates a CA and serving certificate, kept in CertSecret
	// (namespace/name) if set, else in SelfSignedDir if set, else in memory.
	SelfSigned    bool
	CertSecret    string
	SelfSignedDir string
	// Service (namespace/name) and ExtraHosts are the names the generated
	// certificate is valid for.
	Service    string
	ExtraHosts []string
	// WebhookConfiguration names the two configurations whose caBundle is
	// set to the CA at start, when the CA is known; empty leaves them alone.
	WebhookConfiguration string
	// RegisterURL, when set, creates or updates both configurations to call
	// this base URL (local clusters and tests) instead.
	RegisterURL   string
	SchedulerName string
	Kube          kubeclient.Options
	// Mode is "extender" (route pods to SchedulerName) or "dra" (turn them
	// into claims, docs/dra.md).
	Mode string
	// DRASchedulerName, in DRA mode, is given to the pods turned into
	// claims; empty: the default scheduler places them.
	DRASchedulerName string
}

// The webhook's two modes, one per scheduling path.
const (
	ModeExtender = "extender"
	ModeDRA      = "dra"
)

// Run serves until ctx ends.
func Run(ctx context.Context, o Options, log *zap.Logger) error {
	if o.DRASchedulerName != "" {
		if o.Mode != ModeDRA {
			return fmt.Errorf("--dra-scheduler-name %q: only with --mode=%s", o.DRASchedulerName, ModeDRA)
		}
		if msgs := validation.IsDNS1123Subdomain(o.DRASchedulerName); len(msgs) > 0 {
			return fmt.Errorf("--dra-scheduler-name %q: must be a scheduler name (a DNS subdomain): %s", o.DRASchedulerName, strings.Join(msgs, "; "))
		}
	}
	cs, err := o.Kube.Client()
	if err != nil {
		return err
	}
	getCert, ca, reloader, err := o.certificate(ctx, cs, log)
	if err != nil {
		return err
	}
	if err := o.register(ctx, cs, ca, log); err != nil {
		return err
	}

	var (
		factory  informers.SharedInformerFactory
		reviewer = &admission.Reviewer{SchedulerName: o.SchedulerName}
		synced   func() bool
	)
	switch o.Mode {
	case ModeExtender:
		factory = informers.NewSharedInformerFactory(cs, 0)
		largest, err := inventory.New(factory, log)
		if err != nil {
			return err
		}
		reviewer.Capacity, synced = largest, largest.HasSynced
	case ModeDRA:
		slices, f, err := drainventory.New(cs)
		if err != nil {
			return err
		}
		factory = f
		reviewer.Capacity, synced = slices, slices.HasSynced
		reviewer.DRA = &admission.DRA{Templates: drainventory.Templates{Client: cs}, Models: slices, SchedulerName: o.DRASchedulerName}
	default:
		return fmt.Errorf("--mode %q: must be %s or %s", o.Mode, ModeExtender, ModeDRA)
	}
	health := healthserver.New(nil, func() error {
		if !synced() {
			return errors.New("inventory informer not synced yet")
		}
		return nil
	})
	metrics := admission.NewMetrics(health.Registry)

	mux := http.NewServeMux()
	mux.Handle(config.MutatePath, admission.Handler(reviewer, true, metrics, log))
	mux.Handle(config.ValidatePath, admission.Handler(reviewer, false, metrics, log))
	ln, err := healthserver.Listen("listen", o.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12},
		ErrorLog:  zap.NewStdLog(log.Named("https")),
	}
	var healthLn net.Listener
	if o.MetricsAddress == "" {
		health.Register(mux)
	} else if healthLn, err = healthserver.Listen(healthserver.Flag, o.MetricsAddress); err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	factory.Start(ctx.Done())
	if reloader != nil {
		g.Go(func() error { return reloader.Run(ctx) })
	}
	log.Info("serving admission reviews", zap.String("scheduler", o.SchedulerName))
	g.Go(func() error { return healthserver.ServeServer(ctx, ln, srv, log) })
	if healthLn != nil {
		g.Go(func() error { return healthserver.Serve(ctx, healthLn, health.Mux(), log) })
	}
	g.Go(func() error {
		<-ctx.Done()
		factory.Shutdown()
		return nil
	})
	return g.Wait()
}

// certificate returns what serves the TLS certificate and the CA for the
// caBundle (nil when unknown), and the file reloader if there is one.
func (o Options) certificate(ctx context.Context, cs kubernetes.Interface, log *zap.Logger) (
	func(*tls.ClientHelloInfo) (*tls.Certificate, error), []byte, *certs.Reloader, error) {
	if o.CertFile != "" || o.KeyFile != "" {
		if o.SelfSigned {
			return nil, nil, nil, errors.New("--self-signed and --tls-cert-file exclude each other")
		}
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, nil, nil, errors.New("--tls-cert-file and --tls-key-file go together")
		}
		var ca []byte
		if o.CAFile != "" {
			var err error
			if ca, err = os.ReadFile(o.CAFile); err != nil {
				return nil, nil, nil, fmt.Errorf("--ca-file: %w", err)
			}
		}
		r, err := certs.NewReloader(o.CertFile, o.KeyFile, log)
		if err != nil {
			return nil, nil, nil, err
		}
		return r.GetCertificate, ca, r, nil
	}
	if !o.SelfSigned {
		return nil, nil, nil, errors.New("no serving certificate: give --tls-cert-file and --tls-key-file, or --self-signed")
	}
	hosts, err := o.hosts()
	if err != nil {
		return nil, nil, nil, err
	}
	var b certs.Bundle
	switch {
	case o.CertSecret != "":
		ns, name, ok := strings.Cut(o.CertSecret, "/")
		if !ok || ns == "" || name == "" {
			return nil, nil, nil, fmt.Errorf("--cert-secret=%q: want namespace/name", o.CertSecret)
		}
		b, err = certs.FromSecret(ctx, cs, ns, name, hosts)
	case o.SelfSignedDir != "":
		b, err = certs.LoadOrGenerate(o.SelfSignedDir, hosts)
	default:
		b, err = certs.Generate(hosts)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	pair, err := b.KeyPair()
	if err != nil {
		return nil, nil, nil, err
	}
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil }, b.CAPEM, nil, nil
}

// hosts are the names of a generated certificate: the Service's DNS names
// first, then the extra hosts.
func (o Options) hosts() ([]string, error) {
	var hosts []string
	if o.Service != "" {
		ns, name, ok := strings.Cut(o.Service, "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("--service=%q: want namespace/name", o.Service)
		}
		hosts = append(hosts, name+"."+ns+".svc", name+"."+ns+".svc.cluster.local", name+"."+ns, name)
	}
	hosts = append(hosts, o.ExtraHosts...)
	if len(hosts) == 0 {
		return nil, errors.New("a generated certificate needs --service or --self-signed-hosts")
	}
	return hosts, nil
}

// register points the API server at this webhook (--register-url) or keeps
// the caBundle of the existing configurations equal to the CA.
func (o Options) register(ctx context.Context, cs kubernetes.Interface, ca []byte, log *zap.Logger) error {
	if o.RegisterURL != "" {
		if err := config.Apply(ctx, cs, config.AtURL(o.RegisterURL, ca)); err != nil {
			return err
		}
		log.Info("webhook configurations registered", zap.String("url", o.RegisterURL))
		return nil
	}
	if o.WebhookConfiguration == "" || len(ca) == 0 {
		return nil
	}
	err := config.PatchCABundle(ctx, cs, o.WebhookConfiguration, ca)
	if apierrors.IsNotFound(err) {
		// Installed before its configurations (kubectl apply order): the
		// API server does not call it until they exist, and a restart
		// patches them then.
		log.Warn("webhook configurations not found; caBundle not set", zap.String("name", o.WebhookConfiguration))
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("caBundle set", zap.String("configuration", o.WebhookConfiguration))
	return nil
}

// CABundle loads or generates the self-signed bundle in dir and returns its
// CA as a webhook configuration's caBundle field wants it in YAML (base64).
func CABundle(dir string, hosts []string) (string, error) {
	b, err := certs.LoadOrGenerate(dir, hosts)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b.CAPEM), nil
}
