package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	schedconfig "github.com/vgpu-io/vgpu/cmd/extender/config"
)

func (c *Cluster) startEtcd(ctx context.Context) error {
	ports, err := FreePorts(2)
	if err != nil {
		return err
	}
	client, peer := "http://"+hostPort(ports[0]), "http://"+hostPort(ports[1])
	args := []string{
		"--name=e2e",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=e2e=" + peer,
		// A test cluster's data is thrown away; fsync only slows it down.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	p, err := c.launch("etcd", c.bins.Etcd, append(args, c.opts.EtcdArgs...))
	if err != nil {
		return err
	}
	c.etcdURL = client
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		body, err := httpGet(ctx, http.DefaultClient, client+"/health")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `"health":"true"`) {
			return fmt.Errorf("%w: %s", errNotReady, body)
		}
		return nil
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	hosts := []string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}
	if c.realNode != nil {
		hosts = append(hosts, c.realNode.servingHosts()...)
	}
	serving, err := c.pki.issue("apiserver", "kube-apiserver", nil, hosts)
	if err != nil {
		return err
	}
	saKey, saPub, err := c.pki.serviceAccountKey()
	if err != nil {
		return err
	}
	c.APIServerURL = "https://" + hostPort(ports[0])
	args := []string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[0]),
		"--etcd-servers=" + c.etcdURL,
		"--cert-dir=" + filepath.Join(c.Dir, "apiserver"),
		"--tls-cert-file=" + serving.CertFile,
		"--tls-private-key-file=" + serving.KeyFile,
		"--client-ca-file=" + c.pki.CAFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// No kubelet or controller manager maintains the kubernetes
		// Service's endpoints; the default reconciler fails on loopback.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
	}
	if c.realNode != nil {
		args = append(args, c.realNode.apiServerArgs()...)
	}
	p, err := c.launch("kube-apiserver", c.bins.APIServer, append(args, c.opts.APIServerArgs...))
	if err != nil {
		return err
	}
	admin, err := c.pki.issue("admin", "vgpu-e2e-admin", []string{"system:masters"}, nil)
	if err != nil {
		return err
	}
	if c.Kubeconfig, err = c.writeKubeconfig("admin", admin); err != nil {
		return err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return err
	}
	// Tests create objects in bulk; the client-go default (5 QPS) would
	// measure the rate limiter instead of the cluster.
	c.Config.QPS, c.Config.Burst = 500, 1000
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return err
	}
	rc := c.Client.Discovery().RESTClient()
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		// /readyz covers etcd and the RBAC bootstrap roles the scheduler needs.
		body, err := rc.Get().AbsPath("/readyz").Do(ctx).Raw()
		if err != nil {
			return fmt.Errorf("%w: %s", err, body)
		}
		return nil
	})
}

func (c *Cluster) startKwok(ctx context.Context) error {
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	cert, err := c.pki.issue("kwok", "kwok", []string{"system:masters"}, nil)
	if err != nil {
		return err
	}
	kc, err := c.writeKubeconfig("kwok", cert)
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kc,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=fake",
		"--server-address=" + hostPort(ports[0]),
		"--node-lease-duration-seconds=0",
	}
	for _, s := range c.bins.KwokStages {
		args = append(args, "--config="+s)
	}
	p, err := c.launch("kwok", c.bins.Kwok, append(args, c.opts.KwokArgs...))
	if err != nil {
		return err
	}
	url := "http://" + hostPort(ports[0]) + "/healthz"
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := httpGet(ctx, http.DefaultClient, url)
		return err
	})
}

// KwokNodeAnnotation marks a node as simulated by this cluster's kwok; its
// value must be "fake".
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// SetSchedulerConfig replaces the configuration the next StartScheduler
// uses (nil: the default profile). It does not restart a running scheduler.
func (c *Cluster) SetSchedulerConfig(cfg *schedv1.KubeSchedulerConfiguration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.schedCfg = cfg
}

// StartScheduler starts kube-scheduler and waits until it is healthy.
func (c *Cluster) StartScheduler(ctx context.Context) error {
	if c.schedKC == "" {
		cert, err := c.pki.issue("kube-scheduler", "system:kube-scheduler", nil, nil)
		if err != nil {
			return err
		}
		if c.schedKC, err = c.writeKubeconfig("kube-scheduler", cert); err != nil {
			return err
		}
	}
	c.mu.Lock()
	cfg := c.schedCfg
	c.mu.Unlock()
	cfgPath := filepath.Join(c.Dir, "kube-scheduler.yaml")
	if err := writeSchedulerConfig(cfgPath, cfg, c.schedKC); err != nil {
		return err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	args := []string{
		"--config=" + cfgPath,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[0]),
		"--cert-dir=" + filepath.Join(c.Dir, "kube-scheduler"),
	}
	p, err := c.launch("kube-scheduler", c.bins.Scheduler, append(args, c.opts.SchedulerArgs...))
	if err != nil {
		return err
	}
	// The scheduler serves a self-signed certificate; only liveness is
	// checked here, so skipping verification loses nothing.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + hostPort(ports[0])
	c.mu.Lock()
	c.schedURL = base
	c.mu.Unlock()
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := httpGet(ctx, insecure, base+"/healthz")
		return err
	})
}

// SchedulerURL is https://127.0.0.1:<port> of the running kube-scheduler's
// secure port (self-signed), "" before it started.
func (c *Cluster) SchedulerURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.schedURL
}

// StopScheduler stops kube-scheduler (a no-op when it is not running).
func (c *Cluster) StopScheduler() {
	c.stopProcess("kube-scheduler")
}

// writeSchedulerConfig renders cfg (or the default profile) with the
// harness's connection settings.
func writeSchedulerConfig(path string, cfg *schedv1.KubeSchedulerConfiguration, kubeconfig string) error {
	b, err := schedconfig.Local{Kubeconfig: kubeconfig}.Render(cfg)
	if err != nil {
		return fmt.Errorf("kube-scheduler config: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

// writeKubeconfig writes Dir/<name>.kubeconfig for a client certificate,
// with the CA and credentials embedded so the file can be copied.
func (c *Cluster) writeKubeconfig(name string, cert certPair) (string, error) {
	ca, err := os.ReadFile(c.pki.CAFile)
	if err != nil {
		return "", err
	}
	crt, err := os.ReadFile(cert.CertFile)
	if err != nil {
		return "", err
	}
	key, err := os.ReadFile(cert.KeyFile)
	if err != nil {
		return "", err
	}
	const ctxName = "vgpu-e2e"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ctxName] = &clientcmdapi.Cluster{Server: c.APIServerURL, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts[ctxName] = &clientcmdapi.Context{Cluster: ctxName, AuthInfo: name}
	cfg.CurrentContext = ctxName
	path := filepath.Join(c.Dir, name+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// UserKubeconfig writes a kubeconfig for user in groups, signed by the
// cluster CA, for components that should run with their own RBAC identity
// rather than as admin. name names the file (Dir/<name>.kubeconfig).
func (c *Cluster) UserKubeconfig(name, user string, groups ...string) (string, error) {
	cert, err := c.pki.issue(name, user, groups, nil)
	if err != nil {
		return "", err
	}
	return c.writeKubeconfig(name, cert)
}

// IssueServingCert returns a certificate and key for hosts (IPs or DNS
// names), signed by the cluster CA (CAFile), for a component the API server
// or scheduler calls over HTTPS, such as a webhook or an extender.
func (c *Cluster) IssueServingCert(name string, hosts ...string) (certFile, keyFile string, err error) {
	cp, err := c.pki.issue(name, name, nil, hosts)
	return cp.CertFile, cp.KeyFile, err
}

// StartProcess runs an extra binary (a vgpu daemon, say) under the cluster's
// lifecycle: its own process group, killed if the harness dies, output in
// LogPath(name), stopped by Stop. ready, when not nil, is polled until it
// returns nil, the process exits, or StartTimeout passes.
func (c *Cluster) StartProcess(ctx context.Context, name, bin string, args []string, ready func(context.Context) error) error {
	p, err := c.launch(name, bin, args)
	if err != nil {
		return err
	}
	if ready == nil {
		return nil
	}
	return c.waitHealthy(ctx, p, ready)
}

// StopProcess stops a component started by StartProcess (or a built-in one).
func (c *Cluster) StopProcess(name string) { c.stopProcess(name) }

// HTTPReady is a readiness check for StartProcess: url answers 200.
func HTTPReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := httpGet(ctx, http.DefaultClient, url)
		return err
	}
}

func httpGet(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// waitFor polls cond every interval, at once first, until it returns true,
// an error, or ctx ends.
func waitFor(ctx context.Context, interval time.Duration, cond func(context.Context) (bool, error)) error {
	return wait.PollUntilContextCancel(ctx, interval, true, cond)
}
