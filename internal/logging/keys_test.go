package logging

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// zapField matches a zap field constructor with a literal key.
var zapField = regexp.MustCompile(`zap\.[A-Z][A-Za-z0-9]*\("([^"]*)"`)

var lowerCamel = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)

// The log keys of every binary are one set (docs/architecture.md): a key
// spelt two ways splits a query over the logs of the cluster in two.
func TestLogKeysAreOneSet(t *testing.T) {
	root := filepath.Join("..", "..")
	seen := map[string]string{} // lower-cased key → key and where
	for _, dir := range []string{"cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
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
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) < 10 {
		t.Fatalf("found %d log keys: the walk did not reach the binaries' sources", len(seen))
	}
}
