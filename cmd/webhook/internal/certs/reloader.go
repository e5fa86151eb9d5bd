// Package certs gives the webhook its serving certificate: read from files
// and reloaded when they change, or generated with a self-signed CA for local
// use.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Reloader serves the key pair in two files and swaps it when they change.
// A change that leaves the pair unreadable or mismatched keeps the old one,
// so that a half-written rotation never takes the webhook down.
type Reloader struct {
	certFile, keyFile string
	log               *zap.Logger
	cert              atomic.Pointer[tls.Certificate]
	// pem is the certificate file content of the pair in use, to skip
	// reloads for events that changed nothing.
	pem atomic.Pointer[[]byte]
	// reloads counts successful swaps after the first load.
	reloads atomic.Int64
}

// NewReloader loads the pair once; it fails when the files are unusable.
func NewReloader(certFile, keyFile string, log *zap.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// Reloads is how many times a changed pair has been swapped in.
func (r *Reloader) Reloads() int64 { return r.reloads.Load() }

// load reads the pair and swaps it in if it differs; changed reports a swap.
func (r *Reloader) load() (changed bool, err error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return false, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return false, fmt.Errorf("read key: %w", err)
	}
	if old := r.pem.Load(); old != nil && bytes.Equal(*old, certPEM) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert.Store(&pair)
	r.pem.Store(&certPEM)
	return true, nil
}

// Run watches the files' directories until ctx ends. Directories, not files,
// are watched because Secret volumes and most rotation tools replace files
// by rename or symlink swap, which ends a watch on the file itself.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	dirs := map[string]bool{filepath.Dir(r.certFile): true, filepath.Dir(r.keyFile): true}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	// Events come in bursts (create, write, chmod, rename); settle first so
	// that the cert and key are read as a pair.
	const settle = 100 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			r.log.Debug("certificate directory changed", zap.String("event", ev.String()))
			timer.Reset(settle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("watching certificate files", zap.Error(err))
		case <-timer.C:
			changed, err := r.load()
			switch {
			case err != nil:
				r.log.Error("new certificate not loaded; still serving the previous one", zap.Error(err))
			case changed:
				r.reloads.Add(1)
				r.log.Info("serving certificate reloaded", zap.String("cert", r.certFile))
			}
		}
	}
}
