package kustomizetest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every vgpu image the manifests run has a Dockerfile (images/<name>/), and
// every file a Dockerfile copies from the repository exists, so that
// `make images` cannot silently build from a path that has moved.
func TestEveryImageHasADockerfile(t *testing.T) {
	repo := filepath.Join(root(), "..")
	dockerfiles := map[string]bool{}
	for short := range baseImages(t) {
		if name, ok := strings.CutPrefix(short, "vgpu-"); ok {
			dockerfiles[filepath.Join("images", name, "Dockerfile")] = true
		}
	}
	// Built by make images though not deployed: libvgpu (copied into the
	// device plugin's image) and vgpuctl.
	dockerfiles[filepath.Join("images", "libvgpu", "Dockerfile")] = true
	dockerfiles[filepath.Join("images", "vgpuctl", "Dockerfile")] = true
	for df := range dockerfiles {
		f, err := os.Open(filepath.Join(repo, df))
		if err != nil {
			t.Errorf("image without a Dockerfile: %v", err)
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 3 || fields[0] != "COPY" || strings.HasPrefix(fields[1], "--from=") {
				continue
			}
			for _, src := range fields[1 : len(fields)-1] {
				if _, err := os.Stat(filepath.Join(repo, src)); err != nil {
					t.Errorf("%s copies %s: %v", df, src, err)
				}
			}
		}
		f.Close()
	}
}
