package kustomizetest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

var (
	mdLink   = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdAnchor = regexp.MustCompile(`[^a-z0-9 _-]`)
)

// anchors returns the GitHub anchors of a Markdown file's headings.
func anchors(b []byte) map[string]bool {
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		h = mdAnchor.ReplaceAllString(h, "")
		out[strings.ReplaceAll(h, " ", "-")] = true
	}
	return out
}

// Every relative link of the user documentation (docs/ and the README)
// points at a file, and heading, that exists.
func TestDocsLinksResolve(t *testing.T) {
	repo := filepath.Join(root(), "..")
	files, _ := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	files = append(files, filepath.Join(repo, "README.md"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(link, "#")
			target := f
			if path != "" {
				target = filepath.Join(filepath.Dir(f), path)
			}
			tb, err := os.ReadFile(target)
			if err != nil {
				if st, serr := os.Stat(target); serr == nil && st.IsDir() {
					continue
				}
				t.Errorf("%s: link %s: %v", filepath.Base(f), link, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(target, ".md") && !anchors(tb)[anchor] {
				t.Errorf("%s: link %s: no heading #%s in %s", filepath.Base(f), link, anchor, filepath.Base(target))
			}
		}
	}
}

// docsCite matches a citation of the documentation in code: docs/<page>.md,
// with an optional #heading.
var docsCite = regexp.MustCompile(`docs/([a-z0-9-]+\.md)(#[a-z0-9-]+)?`)

// Code comments cite the repository's docs/, which must hold what they cite
// (the page and the heading); a citation of a design brief outside the
// repository leaves the reader nowhere to go.
func TestCodeCitesDocsThatExist(t *testing.T) {
	repo := filepath.Join(root(), "..")
	cited := 0
	testutil.Sources(t, repo, []string{"cmd", "lib", "internal", "test", "kustomize", "libvgpu", "images", "mk"},
		[]string{".go", ".c", ".h", ".S", ".sh", ".mk", ".yaml", "Dockerfile"}, func(rel string, b []byte) {
			if brief := "DESIGN" + " §"; strings.Contains(string(b), brief) {
				t.Errorf("%s cites %s…, which is not in the repository: cite docs/ instead", rel, brief)
			}
			for _, m := range docsCite.FindAllStringSubmatch(string(b), -1) {
				cited++
				page, err := os.ReadFile(filepath.Join(repo, "docs", m[1]))
				if err != nil {
					t.Errorf("%s cites docs/%s, which does not exist", rel, m[1])
					continue
				}
				if a := strings.TrimPrefix(m[2], "#"); a != "" && !anchors(page)[a] {
					t.Errorf("%s cites docs/%s%s: no such heading", rel, m[1], m[2])
				}
			}
		})
	if cited < 10 {
		t.Fatalf("found %d citations of docs/: the walk missed the code", cited)
	}
}
