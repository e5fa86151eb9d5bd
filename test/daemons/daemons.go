// Package daemons runs vgpu's own daemons, the scheduler extender and the
// admission webhook, as real processes beside a test cluster (test/cluster):
// built from this checkout, started under the cluster's lifecycle, killed
// with SIGKILL and restarted by the tests that need it. The e2e tests and
// bench-scheduling share it.
package daemons

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	schedconfig "github.com/vgpu-io/vgpu/cmd/extender/config"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
)

// Names of the processes in the cluster (cluster.LogPath(name) is the log).
const (
	ExtenderName = "vgpu-extender"
	WebhookName  = "vgpu-webhook"
)

// repoRoot is the folder holding go.work, above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

// SchedulerConfig is the extender's own KubeSchedulerConfiguration
// (cmd/extender/config, the file the manifests carry) with its extender at
// url. The harness fills in the kubeconfig and turns leader election off.
func SchedulerConfig(url string) (*schedv1.KubeSchedulerConfiguration, error) {
	cfg, err := schedconfig.At(url)
	if err != nil {
		return nil, err
	}
	cfg.LeaderElection.ResourceName, cfg.LeaderElection.ResourceNamespace = "", ""
	return cfg, nil
}

// DeployedSchedulerConfig is SchedulerConfig read from the file the
// manifests deploy, kustomize/base/scheduler/kube-scheduler-config.yaml,
// for a test whose point is to run exactly what users run.
func DeployedSchedulerConfig(url string) (*schedv1.KubeSchedulerConfiguration, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(root, "kustomize", "base", "scheduler", "kube-scheduler-config.yaml"))
	if err != nil {
		return nil, err
	}
	cfg, err := schedconfig.Parse(data)
	if err != nil {
		return nil, err
	}
	if len(cfg.Extenders) != 1 {
		return nil, fmt.Errorf("kube-scheduler-config.yaml: %d extenders, want vgpu's alone", len(cfg.Extenders))
	}
	cfg.Extenders[0].URLPrefix = url
	cfg.LeaderElection.ResourceName, cfg.LeaderElection.ResourceNamespace = "", ""
	return cfg, nil
}

// Process is one daemon under the cluster.
type Process struct {
	c    *cluster.Cluster
	name string
	bin  string
	args []string
	// ready is polled after each start.
	ready func(context.Context) error
}

// Start (re)starts the process and waits until it is ready.
func (p *Process) Start(ctx context.Context) error {
	return p.c.StartProcess(ctx, p.name, p.bin, p.args, p.ready)
}

// Kill ends the process with SIGKILL, as a crash or an OOM kill would: no
// cleanup, no graceful shutdown.
func (p *Process) Kill() {
	if pid := p.c.PIDs()[p.name]; pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	p.c.StopProcess(p.name) // reaps it
}

// Extender is a running extender.
type Extender struct {
	Process
	// URL serves kube-scheduler; HealthURL /healthz, /readyz, /metrics.
	URL, HealthURL string
}

// StartExtender starts the extender for c and waits until its ledger is
// built (/readyz).
func StartExtender(ctx context.Context, c *cluster.Cluster, extraArgs ...string) (*Extender, error) {
	bin, err := Binary("extender")
	if err != nil {
		return nil, err
	}
	ports, err := cluster.FreePorts(2)
	if err != nil {
		return nil, err
	}
	e := &Extender{
		URL:       "http://127.0.0.1:" + strconv.Itoa(ports[0]),
		HealthURL: "http://127.0.0.1:" + strconv.Itoa(ports[1]),
	}
	e.Process = Process{c: c, name: ExtenderName, bin: bin, args: append([]string{
		"--listen=127.0.0.1:" + strconv.Itoa(ports[0]),
		"--metrics-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--kubeconfig=" + c.Kubeconfig,
	}, extraArgs...), ready: func(ctx context.Context) error { return get(ctx, e.HealthURL+"/readyz", nil) }}
	return e, e.Start(ctx)
}

// Metrics returns the extender's /metrics in the Prometheus text format.
func (e *Extender) Metrics(ctx context.Context) (string, error) {
	var body string
	err := get(ctx, e.HealthURL+"/metrics", &body)
	return body, err
}

// Webhook is a running webhook, registered with the API server.
type Webhook struct {
	Process
	URL string
}

// StartWebhook starts the webhook with a self-signed certificate kept in
// the cluster's folder; it registers both webhook configurations with the
// API server itself (--register-url).
func StartWebhook(ctx context.Context, c *cluster.Cluster, extraArgs ...string) (*Webhook, error) {
	bin, err := Binary("webhook")
	if err != nil {
		return nil, err
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		return nil, err
	}
	w := &Webhook{URL: "https://127.0.0.1:" + strconv.Itoa(ports[0])}
	w.Process = Process{c: c, name: WebhookName, bin: bin, args: append([]string{
		"--listen=127.0.0.1:" + strconv.Itoa(ports[0]),
		"--self-signed", "--self-signed-dir=" + filepath.Join(c.Dir, "webhook-certs"),
		"--register-url=" + w.URL,
		"--kubeconfig=" + c.Kubeconfig,
	}, extraArgs...), ready: func(ctx context.Context) error {
		// The API server's view is what matters: a dry-run of a vgpu pod
		// reaches the webhook only once it is registered and serving.
		return dryRunGPUPod(ctx, c.Client)
	}}
	return w, w.Start(ctx)
}

// dryRunGPUPod succeeds once the API server sends vgpu pods through the
// webhook: the dry-run pod comes back mutated.
func dryRunGPUPod(ctx context.Context, cs kubernetes.Interface) error {
	p, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "webhook-probe-"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x", Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{contract.ResourceCores: resource.MustParse("10")}}}}},
	}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return err
	}
	// Routed to vgpu's scheduler, or, in DRA mode, given a claim.
	if p.Spec.SchedulerName != contract.DefaultSchedulerName && len(p.Spec.ResourceClaims) == 0 {
		return fmt.Errorf("a vgpu pod is not mutated yet (schedulerName %q)", p.Spec.SchedulerName)
	}
	return nil
}

// SetSettings writes the vgpu-settings ConfigMap (creating its namespace).
func SetSettings(ctx context.Context, c *cluster.Cluster, s settings.Settings) error {
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, contract.DefaultNamespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if err := c.CreateNamespace(ctx, contract.DefaultNamespace); err != nil {
			return err
		}
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: contract.SettingsConfigMap, Namespace: contract.DefaultNamespace}, Data: s.Data()}
	cms := c.Client.CoreV1().ConfigMaps(contract.DefaultNamespace)
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	} else {
		return err
	}
}

func get(ctx context.Context, url string, body *string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	if body != nil {
		*body = string(b)
	}
	return nil
}
