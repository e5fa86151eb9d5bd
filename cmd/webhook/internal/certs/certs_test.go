package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// serve starts an HTTPS server that takes its certificate from r.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	// Not httptest's TLS server: it installs its own certificate, which
	// takes precedence over GetCertificate for clients that send no SNI.
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + l.Addr().String()
}

// get reports whether a client trusting only ca completes a request.
func get(url string, ca []byte) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

func TestReloadOnRotation(t *testing.T) {
	dir := t.TempDir()
	hosts := []string{"vgpu-webhook.vgpu-system.svc", "127.0.0.1"}
	first, err := LoadOrGenerate(dir, hosts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrGenerate(dir, hosts)
	if err != nil || string(again.CAPEM) != string(first.CAPEM) {
		t.Fatalf("LoadOrGenerate over an existing bundle made a new CA (err %v)", err)
	}
	r, err := NewReloader(filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	url := serve(t, r)
	if err := get(url, first.CAPEM); err != nil {
		t.Fatalf("client trusting the generated CA: %v", err)
	}

	// A broken rotation keeps the old certificate in service.
	time.Sleep(200 * time.Millisecond) // let the watch start
	if err := os.WriteFile(filepath.Join(dir, CertFileName), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := get(url, first.CAPEM); err != nil {
		t.Fatalf("after a garbage certificate was written, the old one should still serve: %v", err)
	}

	second, err := Generate(hosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Write(dir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.Reloads() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the rotated certificate was not reloaded within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := get(url, second.CAPEM); err != nil {
		t.Fatalf("client trusting the new CA after rotation: %v", err)
	}
	if err := get(url, first.CAPEM); err == nil {
		t.Fatal("client trusting only the old CA still connects after rotation")
	}
}

func TestNewReloaderRejectsMismatchedPair(t *testing.T) {
	dir := t.TempDir()
	a, err := Generate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "c"), filepath.Join(dir, "k")
	if err := os.WriteFile(cert, a.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, b.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewReloader(cert, key, zap.NewNop()); err == nil {
		t.Fatal("a certificate with another key's pair was accepted")
	}
	if _, err := NewReloader(filepath.Join(dir, "missing"), key, zap.NewNop()); err == nil {
		t.Fatal("a missing certificate file was accepted")
	}
}

func TestGenerateNeedsAHost(t *testing.T) {
	if _, err := Generate(nil); err == nil {
		t.Fatal("Generate without hosts succeeded")
	}
}

func TestFromSecretCreatesOnceAndReuses(t *testing.T) {
	cs := fake.NewClientset()
	ctx := context.Background()
	a, err := FromSecret(ctx, cs, "vgpu-system", "tls", []string{"svc"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromSecret(ctx, cs, "vgpu-system", "tls", []string{"svc"})
	if err != nil {
		t.Fatal(err)
	}
	if string(a.CAPEM) != string(b.CAPEM) || string(a.KeyPEM) != string(b.KeyPEM) {
		t.Fatal("a second replica got a different CA than the Secret's")
	}
	if _, err := b.KeyPair(); err != nil {
		t.Fatalf("pair from the Secret: %v", err)
	}
	s, _ := cs.CoreV1().Secrets("vgpu-system").Get(ctx, "tls", metav1.GetOptions{})
	delete(s.Data, "ca.crt")
	if _, err := cs.CoreV1().Secrets("vgpu-system").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := FromSecret(ctx, cs, "vgpu-system", "tls", []string{"svc"}); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("a Secret without its CA: err %v", err)
	}
}
