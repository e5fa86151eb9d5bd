// Package healthserver serves what every vgpu daemon serves beside its real
// work, the same way: /healthz (the process is alive), /readyz (it can answer
// truthfully yet, else 503 and why) and /metrics (its registry, plus Go's and
// the process's collectors), on the address of one flag, --metrics-address;
// and it stops every HTTP server of the daemons alike.
package healthserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

// Flag is the one name of the health and metrics address.
const Flag = "metrics-address"

// AddFlag registers --metrics-address on fs. Each old name the component
// used keeps working for a release, marked deprecated, so that users'
// overlays survive the upgrade.
func AddFlag(fs *pflag.FlagSet, p *string, def, usage string, oldNames ...string) {
	fs.StringVar(p, Flag, def, usage)
	for _, old := range oldNames {
		fs.StringVar(p, old, def, usage)
		_ = fs.MarkDeprecated(old, "use --"+Flag)
	}
}

// Ready says why the daemon cannot answer truthfully yet; nil when it can.
type Ready func() error

// Server holds the health and metrics routes of one daemon.
type Server struct {
	// Registry is where the daemon registers its metrics.
	Registry *prometheus.Registry
	ready    Ready
}

// New returns a server of reg (a new registry when nil) with Go's and the
// process's collectors registered; ready nil means always ready.
func New(reg *prometheus.Registry, ready Ready) *Server {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if ready == nil {
		ready = func() error { return nil }
	}
	return &Server{Registry: reg, ready: ready}
}

// Register adds /healthz, /readyz and /metrics to mux, for a daemon that
// serves them beside its own routes.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
}

// Mux returns a new mux holding the routes.
func (s *Server) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	s.Register(mux)
	return mux
}

// Listen opens addr, naming the flag in the error.
func Listen(flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s=%s: %w", flag, addr, err)
	}
	return ln, nil
}

// ShutdownGrace is how long requests in flight may finish once a daemon is
// told to stop.
const ShutdownGrace = 5 * time.Second

// Serve serves h on ln until ctx ends; see ServeServer.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *zap.Logger) error {
	return ServeServer(ctx, ln, &http.Server{Handler: h}, log)
}

// ServeServer serves srv on ln (with TLS when srv.TLSConfig is set) until
// ctx ends, then lets requests in flight finish for ShutdownGrace. It
// returns nil after a shutdown and the server's error otherwise.
func ServeServer(ctx context.Context, ln net.Listener, srv *http.Server, log *zap.Logger) error {
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = 10 * time.Second
	}
	if srv.ErrorLog == nil {
		srv.ErrorLog = zap.NewStdLog(log.Named("http"))
	}
	errc := make(chan error, 1)
	go func() {
		log.Info("serving", zap.String("address", ln.Addr().String()))
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	<-errc
	return nil
}
