// Package app wires the webhook: certificate, Node informer, admission
// handlers, the HTTPS server and the probe/metrics server.
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
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vgpu-io/vgpu/cmd/webhook/config"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/admission"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/certs"
	"github.com/vgpu-io/vgpu/cmd/webhook/internal/inventory"
)

// Options are the webhook's flags.
type Options struct {
	Listen, ProbeListen string
	CertFile, KeyFile   string
	// SelfSignedDir, used when CertFile is empty, holds a generated CA and
	// serving certificate for SelfSignedHosts (created on first start).
	SelfSignedDir   string
	SelfSignedHosts []string
	// CAFile is the CA to put in caBundle when serving from CertFile.
	CAFile        string
	SchedulerName string
	Kubeconfig    string
	QPS           float32
	Burst         int
	// RegisterURL, when set, creates or updates both webhook configurations
	// to call this base URL (local clusters and tests).
	RegisterURL string
	// PatchCABundle sets the caBundle of the existing configurations.
	PatchCABundle bool
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options, log *zap.Logger) error {
	certFile, keyFile, ca, err := o.certificate()
	if err != nil {
		return err
	}
	reloader, err := certs.NewReloader(certFile, keyFile, log)
	if err != nil {
		return err
	}
	cs, err := Client(o.Kubeconfig, o.QPS, o.Burst)
	if err != nil {
		return err
	}
	if o.RegisterURL != "" {
		if err := config.Apply(ctx, cs, config.AtURL(o.RegisterURL, ca)); err != nil {
			return err
		}
		log.Info("webhook configurations registered", zap.String("url", o.RegisterURL))
	} else if o.PatchCABundle {
		if len(ca) == 0 {
			return errors.New("--patch-ca-bundle needs the CA: give --ca-file, or use --self-signed-dir")
		}
		if err := config.PatchCABundle(ctx, cs, ca); err != nil {
			return err
		}
		log.Info("caBundle patched", zap.String("configuration", config.ConfigurationName))
	}

	factory := informers.NewSharedInformerFactory(cs, 0)
	largest, err := inventory.New(factory, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := admission.NewMetrics(reg)
	reviewer := &admission.Reviewer{SchedulerName: o.SchedulerName, Capacity: largest}

	mux := http.NewServeMux()
	mux.Handle(config.MutatePath, admission.Handler(reviewer, true, metrics, log))
	mux.Handle(config.ValidatePath, admission.Handler(reviewer, false, metrics, log))
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{GetCertificate: reloader.GetCertificate, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("https")),
	}
	probes := http.NewServeMux()
	probes.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	probes.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !largest.HasSynced() {
			http.Error(w, "node informer not synced yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	probes.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	probeSrv := &http.Server{Addr: o.ProbeListen, Handler: probes, ReadHeaderTimeout: 10 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	factory.Start(ctx.Done())
	g.Go(func() error { return reloader.Run(ctx) })
	g.Go(func() error {
		log.Info("serving admission reviews", zap.String("address", ln.Addr().String()), zap.String("scheduler", o.SchedulerName))
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if o.ProbeListen != "" {
		g.Go(func() error {
			if err := probeSrv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = probeSrv.Shutdown(shutdown)
		_ = srv.Shutdown(shutdown)
		factory.Shutdown()
		return nil
	})
	return g.Wait()
}

// certificate returns the key pair files to serve and the CA for caBundle.
func (o Options) certificate() (certFile, keyFile string, ca []byte, err error) {
	if o.CertFile != "" || o.KeyFile != "" {
		if o.CertFile == "" || o.KeyFile == "" {
			return "", "", nil, errors.New("--tls-cert-file and --tls-key-file go together")
		}
		if o.CAFile != "" {
			if ca, err = os.ReadFile(o.CAFile); err != nil {
				return "", "", nil, fmt.Errorf("--ca-file: %w", err)
			}
		}
		return o.CertFile, o.KeyFile, ca, nil
	}
	if o.SelfSignedDir == "" {
		return "", "", nil, errors.New("no serving certificate: give --tls-cert-file and --tls-key-file, or --self-signed-dir")
	}
	b, err := certs.LoadOrGenerate(o.SelfSignedDir, o.SelfSignedHosts)
	if err != nil {
		return "", "", nil, err
	}
	return filepath.Join(o.SelfSignedDir, certs.CertFileName), filepath.Join(o.SelfSignedDir, certs.KeyFileName), b.CAPEM, nil
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

// Client builds a clientset from a kubeconfig path, $KUBECONFIG, or the
// in-cluster service account, in that order.
func Client(kubeconfig string, qps float32, burst int) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = qps, burst
	cfg.UserAgent = "vgpu-webhook"
	return kubernetes.NewForConfig(cfg)
}
