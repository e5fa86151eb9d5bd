package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
)

// schedulerArgs let an unauthenticated client read kube-scheduler's metrics
// and pprof handlers (the harness gives it no authorization kubeconfig).
var schedulerArgs = []string{"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics,/debug/pprof/*"}

// insecure reads kube-scheduler's self-signed secure port (and the mode's
// plain-HTTP components); only the benchmark's own numbers pass over it.
var insecure = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// profileWindow is how long each CPU profile records; it starts a moment
// after the scheduler, once its caches are synced and it is binding.
const (
	profileDelay  = 2 * time.Second
	profileWindow = 8 * time.Second
)

// captureProfiles records a CPU profile of each component (name → base URL
// serving /debug/pprof/) at once into dir/<mode>-<name>.pprof. It returns a
// wait function that reports the files written.
//
// The API server's profile is read through client, with its credentials.
func captureProfiles(ctx context.Context, dir, mode string, bases map[string]string, client kubernetes.Interface) func() []string {
	get := map[string]func(ctx context.Context, path string) error{
		"kube-apiserver": func(ctx context.Context, path string) error {
			b, err := client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
				Param("seconds", strconv.Itoa(int(profileWindow.Seconds()))).Timeout(2 * profileWindow).DoRaw(ctx)
			if err != nil {
				return err
			}
			return os.WriteFile(path, b, 0o644)
		},
	}
	for name, base := range bases {
		get[name] = func(ctx context.Context, path string) error {
			return fetch(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, int(profileWindow.Seconds())), path)
		}
	}
	var mu sync.Mutex
	var done []string
	var wg sync.WaitGroup
	for name, fn := range get {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(profileDelay):
			}
			path := filepath.Join(dir, mode+"-"+name+".pprof")
			msg := path
			if err := fn(ctx, path); err != nil {
				msg = fmt.Sprintf("%s: %v", name, err)
			}
			mu.Lock()
			done = append(done, msg)
			mu.Unlock()
		}()
	}
	return func() []string {
		wg.Wait()
		return done
	}
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
