package kubeclient

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	data := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: ` + server + `}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// noCluster hides any real configuration: an empty home, no $KUBECONFIG,
// not in a pod.
func noCluster(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
}

func TestKubeconfigEnvironmentIsHonoured(t *testing.T) {
	noCluster(t)
	t.Setenv("KUBECONFIG", writeKubeconfig(t, "https://from-env.example:6443"))
	cfg, err := Options{Component: "deviceplugin"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://from-env.example:6443" {
		t.Errorf("host %q: $KUBECONFIG was not read", cfg.Host)
	}
	if !strings.HasPrefix(cfg.UserAgent, "vgpu-deviceplugin/") {
		t.Errorf("user agent %q, want vgpu-deviceplugin/<version>", cfg.UserAgent)
	}
	if cfg.ContentType != runtime.ContentTypeProtobuf {
		t.Errorf("content type %q, want protobuf", cfg.ContentType)
	}
}

func TestFlagBeatsEnvironment(t *testing.T) {
	noCluster(t)
	t.Setenv("KUBECONFIG", writeKubeconfig(t, "https://from-env.example:6443"))
	cfg, err := Options{Kubeconfig: writeKubeconfig(t, "https://from-flag.example:6443"), QPS: 7, Burst: 9}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://from-flag.example:6443" || cfg.QPS != 7 || cfg.Burst != 9 {
		t.Errorf("host %q qps %v burst %d, want the --kubeconfig file's host, 7 and 9", cfg.Host, cfg.QPS, cfg.Burst)
	}
}

func TestNoConfigurationSaysWhereItLookedAndWhatToDo(t *testing.T) {
	noCluster(t)
	_, err := Options{}.Config()
	if !errors.Is(err, ErrNoConfiguration) {
		t.Fatalf("error %v, want ErrNoConfiguration", err)
	}
	msg := err.Error()
	for _, want := range []string{"$KUBECONFIG (not set)", ".kube/config", "in-cluster", "--kubeconfig"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "KUBERNETES_MASTER") {
		t.Errorf("%q still gives client-go's advice", msg)
	}
}
