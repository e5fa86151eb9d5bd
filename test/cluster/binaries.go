package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Environment variables through which `make tools` tells the harness where it
// put the binaries (mk/cluster.mk sets them for test-e2e and cluster-up).
const (
	EnvKubeBinDir = "VGPU_KUBE_BIN_DIR" // kube-apiserver, kube-scheduler, kubectl
	EnvEtcdBin    = "VGPU_ETCD_BIN"
	EnvKwokBin    = "VGPU_KWOK_BIN"
	EnvKwokStages = "VGPU_KWOK_STAGES" // folder of kwok Stage YAML files
	// containerd, ctr and containerd-shim-runc-v2, for the real node.
	EnvContainerdBinDir = "VGPU_CONTAINERD_BIN_DIR"
)

// Binaries are the executables and kwok stage files a cluster runs.
type Binaries struct {
	APIServer  string
	Scheduler  string
	Kubectl    string
	Etcd       string
	Kwok       string
	KwokStages []string
	// The real node's (RealNodeOptions): found, not required, here.
	Kubelet, ControllerManager, Proxy string
	ContainerdDir                     string
}

// FindBinaries locates the binaries from the environment and, for each one
// not set there, from the newest matching folder under the repository's
// .cache (so `go test` works after `make tools` without extra variables).
// The error names every missing file and how to build it.
func FindBinaries() (Binaries, error) {
	cache := repoCache()
	kubeDir := firstNonEmpty(os.Getenv(EnvKubeBinDir), newestDir(cache, "k8s-*"))
	etcd := os.Getenv(EnvEtcdBin)
	if etcd == "" {
		etcd = joinIf(newestDir(cache, "etcd-*"), "etcd")
	}
	kwok := os.Getenv(EnvKwokBin)
	kwokDir := newestDir(cache, "kwok-*")
	if kwok == "" {
		kwok = joinIf(kwokDir, "kwok")
	}
	stagesDir := firstNonEmpty(os.Getenv(EnvKwokStages), joinIf(kwokDir, "stages"))

	b := Binaries{
		APIServer: joinIf(kubeDir, "kube-apiserver"),
		Scheduler: joinIf(kubeDir, "kube-scheduler"),
		Kubectl:   joinIf(kubeDir, "kubectl"),
		Etcd:      etcd,
		Kwok:      kwok,

		Kubelet:           joinIf(kubeDir, "kubelet"),
		ControllerManager: joinIf(kubeDir, "kube-controller-manager"),
		Proxy:             joinIf(kubeDir, "kube-proxy"),
		ContainerdDir:     firstNonEmpty(os.Getenv(EnvContainerdBinDir), newestDir(cache, "containerd-*")),
	}
	var errs []error
	for _, f := range []struct{ name, path, env string }{
		{"kube-apiserver", b.APIServer, EnvKubeBinDir},
		{"kube-scheduler", b.Scheduler, EnvKubeBinDir},
		{"etcd", b.Etcd, EnvEtcdBin},
		{"kwok", b.Kwok, EnvKwokBin},
	} {
		if err := checkExecutable(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s binary %s (set %s or run `make tools`)", f.name, err, f.env))
		}
	}
	if stagesDir != "" {
		b.KwokStages, _ = filepath.Glob(filepath.Join(stagesDir, "*.yaml"))
	}
	if len(b.KwokStages) == 0 {
		errs = append(errs, fmt.Errorf("kwok stage configs: no *.yaml in %q (set %s or run `make tools`)", stagesDir, EnvKwokStages))
	}
	return b, errors.Join(errs...)
}

func checkExecutable(path string) error {
	if path == "" {
		return errors.New("not found")
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: not found", path)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: not an executable file", path)
	}
	return nil
}

// repoCache is the .cache folder of the enclosing repository (the folder
// holding go.work), or "" outside one.
func repoCache() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return filepath.Join(dir, ".cache")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// newestDir is the lexically last folder matching pattern under root: with
// version-named folders that is usually the newest build.
func newestDir(root, pattern string) string {
	if root == "" {
		return ""
	}
	m, _ := filepath.Glob(filepath.Join(root, pattern))
	sort.Strings(m)
	for i := len(m) - 1; i >= 0; i-- {
		if st, err := os.Stat(m[i]); err == nil && st.IsDir() {
			return m[i]
		}
	}
	return ""
}

func joinIf(dir, name string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, name)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
