package daemons

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// decodes matches what decoding a KubeSchedulerConfiguration takes.
var decodes = regexp.MustCompile(`AddToScheme\(|Unmarshal(Strict)?\(|NewSerializer|NewCodecFactory`)

// The scheduler configuration is parsed in one place, cmd/extender/config
// (strictly, as kube-scheduler does); the harness, the tests and the
// benchmark take it from there, so what they run is what ships.
func TestSchedulerConfigurationIsParsedOnce(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	testutil.Sources(t, root, []string{"cmd", "internal", "lib", "test", "kustomize"}, []string{".go"}, func(path string, b []byte) {
		if strings.HasPrefix(path, filepath.Join("cmd", "extender", "config")+string(filepath.Separator)) ||
			strings.HasSuffix(path, filepath.Join("daemons", "schedconfig_test.go")) ||
			!strings.Contains(string(b), `"k8s.io/kube-scheduler/config/v1"`) {
			return
		}
		seen++
		if m := decodes.Find(b); m != nil {
			t.Errorf("%s decodes a scheduler configuration itself (%s); use cmd/extender/config", path, m)
		}
	})
	if seen < 3 {
		t.Fatalf("only %d files use the scheduler configuration types: the walk missed the repository", seen)
	}
}
