package certs

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
)

// File names written by Bundle.Write, as in a kubernetes.io/tls Secret.
const (
	CertFileName = "tls.crt"
	KeyFileName  = "tls.key"
	CAFileName   = "ca.crt"
)

// Bundle is a serving key pair and the CA that signed it.
type Bundle struct {
	// CertPEM is the serving certificate followed by the CA certificate.
	CertPEM []byte
	KeyPEM  []byte
	// CAPEM is what a webhook configuration's caBundle must hold.
	CAPEM []byte
}

// Generate makes a fresh CA and a serving certificate for hosts (DNS names
// or IP addresses, the first one is the subject), valid for a year.
func Generate(hosts []string) (Bundle, error) {
	if len(hosts) == 0 {
		return Bundle{}, errors.New("at least one host name or IP is needed for the serving certificate")
	}
	var ips []net.IP
	var dns []string
	for _, h := range hosts[1:] {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(hosts[0], ips, dns)
	if err != nil {
		return Bundle{}, err
	}
	// client-go appends the CA after the serving certificate.
	first, rest := pem.Decode(certPEM)
	ca, _ := pem.Decode(rest)
	if first == nil || ca == nil {
		return Bundle{}, errors.New("generated certificate has no CA block")
	}
	return Bundle{CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: pem.EncodeToMemory(ca)}, nil
}

// Write stores the bundle in dir as tls.crt, tls.key and ca.crt. The key
// is written first and the certificate last, each by rename, so that a
// Reloader watching dir never pairs a new certificate with an old key.
func (b Bundle) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{KeyFileName, b.KeyPEM, 0o600}, {CAFileName, b.CAPEM, 0o644}, {CertFileName, b.CertPEM, 0o644}} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			return err
		}
	}
	return nil
}

// LoadOrGenerate returns the bundle in dir, generating and writing one when
// dir has none, so that restarts keep the CA the cluster already trusts.
func LoadOrGenerate(dir string, hosts []string) (Bundle, error) {
	var b Bundle
	var err error
	read := func(name string) []byte {
		if err != nil {
			return nil
		}
		var data []byte
		data, err = os.ReadFile(filepath.Join(dir, name))
		return data
	}
	b.CertPEM, b.KeyPEM, b.CAPEM = read(CertFileName), read(KeyFileName), read(CAFileName)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Bundle{}, fmt.Errorf("self-signed certificate in %s: %w", dir, err)
	}
	if b, err = Generate(hosts); err != nil {
		return Bundle{}, err
	}
	return b, b.Write(dir)
}

// Secret keys, as in a kubernetes.io/tls Secret plus the CA.
const (
	secretCert = corev1.TLSCertKey
	secretKey  = corev1.TLSPrivateKeyKey
	secretCA   = "ca.crt"
)

// FromSecret returns the bundle kept in the Secret namespace/name, creating
// the Secret with a fresh bundle for hosts if it does not exist. Replicas
// that start together race to create it; the losers read the winner's, so
// that every replica serves under the one CA in the caBundle.
func FromSecret(ctx context.Context, cs kubernetes.Interface, namespace, name string, hosts []string) (Bundle, error) {
	secrets := cs.CoreV1().Secrets(namespace)
	for attempt := 0; attempt < 3; attempt++ {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			b := Bundle{CertPEM: s.Data[secretCert], KeyPEM: s.Data[secretKey], CAPEM: s.Data[secretCA]}
			if len(b.CertPEM) == 0 || len(b.KeyPEM) == 0 || len(b.CAPEM) == 0 {
				return Bundle{}, fmt.Errorf("secret %s/%s lacks %s, %s or %s: delete it to have a new one generated", namespace, name, secretCert, secretKey, secretCA)
			}
			return b, nil
		}
		if !apierrors.IsNotFound(err) {
			return Bundle{}, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
		}
		b, err := Generate(hosts)
		if err != nil {
			return Bundle{}, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "vgpu"}},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{secretCert: b.CertPEM, secretKey: b.KeyPEM, secretCA: b.CAPEM},
		}, metav1.CreateOptions{})
		if err == nil {
			return b, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return Bundle{}, fmt.Errorf("create secret %s/%s: %w", namespace, name, err)
		}
	}
	return Bundle{}, fmt.Errorf("secret %s/%s: created and deleted concurrently, giving up", namespace, name)
}

// KeyPair parses the bundle's serving pair.
func (b Bundle) KeyPair() (tls.Certificate, error) {
	return tls.X509KeyPair(b.CertPEM, b.KeyPEM)
}
