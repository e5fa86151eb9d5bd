package healthserver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRoutesAndShutdown(t *testing.T) {
	var why error = errors.New("waiting for the pod cache")
	s := New(nil, func() error { return why })
	ln, err := Listen(Flag, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, s.Mux(), zap.NewNop()) }()
	base := "http://" + ln.Addr().String()

	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d while not ready, want 200: alive is not ready", code)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "pod cache") {
		t.Errorf("/readyz %d %q, want 503 saying why", code, body)
	}
	why = nil
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d once ready, want 200", code)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Errorf("/metrics lacks the Go and process collectors")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after shutdown: %v", err)
		}
	case <-time.After(ShutdownGrace + time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestListenNamesTheFlag(t *testing.T) {
	ln, err := Listen(Flag, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Listen(Flag, ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "--metrics-address") {
		t.Errorf("error %v, want one naming --metrics-address", err)
	}
}

func TestOldFlagNameStillWorks(t *testing.T) {
	var addr string
	fs := pflag.NewFlagSet("monitor", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	AddFlag(fs, &addr, ":9394", "health and metrics", "listen")
	if err := fs.Parse([]string{"--listen=:7777"}); err != nil {
		t.Fatal(err)
	}
	if addr != ":7777" {
		t.Errorf("--listen set %q, want :7777", addr)
	}
	if f := fs.Lookup("listen"); f == nil || f.Deprecated == "" || !f.Hidden {
		t.Errorf("--listen is not marked deprecated")
	}
}
