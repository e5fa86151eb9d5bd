package logging

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// zapField matches a zap field constructor with a literal key.
var zapField = regexp.MustCompile(`zap\.[A-Z][A-Za-z0-9]*\("([^"]*)"`)

var lowerCamel = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)

// The log keys of every binary are one set (docs/architecture.md): a key
// spelt two ways splits a query over the logs of the cluster in two.
func TestLogKeysAreOneSet(t *testing.T) {
	seen := map[string]string{} // lower-cased key → key and where
	testutil.Sources(t, filepath.Join("..", ".."), []string{"cmd", "internal"}, []string{".go"}, func(path string, b []byte) {
		if strings.HasSuffix(path, "_test.go") {
			return
		}
		for _, m := range zapField.FindAllStringSubmatch(string(b), -1) {
			key := m[1]
			if !lowerCamel.MatchString(key) {
				t.Errorf("%s: log key %q is not lowerCamelCase", path, key)
			}
			low := strings.ToLower(key)
			if prev, ok := seen[low]; ok && !strings.HasPrefix(prev, key+" ") {
				t.Errorf("%s: log key %q, elsewhere %s", path, key, prev)
			}
			seen[low] = key + " (" + path + ")"
		}
	})
	if len(seen) < 10 {
		t.Fatalf("found %d log keys: the walk did not reach the binaries' sources", len(seen))
	}
}
