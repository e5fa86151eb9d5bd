package daemons

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// EnvBinDir names the folder holding vgpu's binaries as `make build` made
// them. make test sets it, so every test runs the binaries that ship, built
// once and outside any test's timeout.
const EnvBinDir = "VGPU_BIN_DIR"

var (
	buildMu  sync.Mutex
	builtBin = map[string]string{}
)

// Binary returns the path of one of vgpu's binaries (extender, webhook,
// deviceplugin, monitor, vgpuctl): from $VGPU_BIN_DIR when set, otherwise
// built once per test process the way `make build` builds it, outside the
// workspace (GOWORK=off), so a plain `go test` still works.
func Binary(name string) (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s has no %s: run make build (%v)", EnvBinDir, d, name, err)
		}
		return p, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtBin[name]; ok {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "e2e-bin")
	// Built under a name of its own, then renamed: another test process may
	// be running the previous binary, which a rename leaves intact and an
	// overwrite would fail on (text file busy).
	tmp := filepath.Join(dir, fmt.Sprintf(".%s-%d", name, os.Getpid()))
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = filepath.Join(root, "cmd", name)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/%s: %v\n%s", name, err, out)
	}
	p := filepath.Join(dir, name)
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	builtBin[name] = p
	return p, nil
}
