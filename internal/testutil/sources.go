package testutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Sources calls fn with the path (relative to root) and content of every
// file below root/<dir> for each of dirs whose name ends in one of suffixes,
// leaving out hidden directories and testdata. The tests that hold the whole
// repository to a rule (log keys, citations, one parser) read it this way;
// it fails t when it finds no file, so that a wrong root cannot pass.
func Sources(t testing.TB, root string, dirs, suffixes []string, fn func(rel string, src []byte)) {
	t.Helper()
	n := 0
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == "testdata" || (strings.HasPrefix(d.Name(), ".") && path != filepath.Join(root, dir)) {
					return filepath.SkipDir
				}
				return nil
			}
			for _, s := range suffixes {
				if strings.HasSuffix(path, s) {
					b, err := os.ReadFile(path)
					if err != nil {
						return err
					}
					rel, _ := filepath.Rel(root, path)
					n++
					fn(rel, b)
					return nil
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 {
		t.Fatalf("no %v file below %s/%v", suffixes, root, dirs)
	}
}
