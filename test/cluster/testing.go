package cluster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// EnvE2E must be "1" for Run to start a cluster; `make test-e2e` sets it.
// Without it e2e tests skip, so `go test ./...` over the workspace stays
// fast and works before `make tools` has built the binaries.
const EnvE2E = "VGPU_E2E"

// Run starts a cluster for t and registers its teardown with t.Cleanup
// (which also runs when the test panics): on failure the cluster state is
// dumped to the test log first; then every process is stopped and Stop's
// own check that none is left is reported as a test error.
func Run(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if os.Getenv(EnvE2E) != "1" {
		t.Skipf("end-to-end test: set %s=1 (make test-e2e does, after building the binaries with make tools)", EnvE2E)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	if opts.Dir == "" {
		// Short: Unix socket paths under it (webhooks, device plugins) must
		// stay below 108 bytes.
		dir, err := os.MkdirTemp("", "vgpu-e2e-")
		if err != nil {
			t.Fatal(err)
		}
		opts.Dir = dir
		t.Cleanup(func() {
			if !t.Failed() {
				os.RemoveAll(dir)
			} else {
				t.Logf("cluster data and logs kept in %s", dir)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*opts.startTimeout()+30*time.Second)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			c.Dump(context.Background(), &b)
			t.Log(b.String())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster: %v", err)
		}
	})
	return c
}

func (o Options) startTimeout() time.Duration {
	if o.StartTimeout == 0 {
		return 60 * time.Second
	}
	return o.StartTimeout
}
