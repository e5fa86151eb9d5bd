package daemons

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
	owner := filepath.Join(root, "cmd", "extender", "config")
	seen := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || path == owner) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || d.Name() == "schedconfig_test.go" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `"k8s.io/kube-scheduler/config/v1"`) {
			return nil
		}
		seen++
		if m := decodes.Find(b); m != nil {
			t.Errorf("%s decodes a scheduler configuration itself (%s); use cmd/extender/config", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 3 {
		t.Fatalf("only %d files use the scheduler configuration types: the walk missed the repository", seen)
	}
}
