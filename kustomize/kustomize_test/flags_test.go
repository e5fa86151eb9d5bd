package kustomizetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vgpu-io/vgpu/test/daemons"
)

// Flags of vgpu's binaries that these tests look for in the manifests.
const (
	extenderListenFlag = "listen"
	webhookListenFlag  = "listen"
)

// binaryOfImage maps the manifests' short image names to vgpu's binaries.
var binaryOfImage = map[string]string{
	"vgpu-extender":      "extender",
	"vgpu-webhook":       "webhook",
	"vgpu-device-plugin": "deviceplugin",
	"vgpu-monitor":       "monitor",
}

var flagName = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)`)

// build returns one of vgpu's binaries as `make build` made it (make test
// passes $VGPU_BIN_DIR), so that the flags checked are those of what ships.
func build(t *testing.T, binary string) string {
	t.Helper()
	bin, err := daemons.Binary(binary)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// helpFlags builds one of vgpu's binaries and returns the flags its --help
// lists.
func helpFlags(t *testing.T, binary string) map[string]bool {
	t.Helper()
	return runHelp(t, build(t, binary))
}

func help(t *testing.T, bin string, args ...string) string {
	t.Helper()
	b, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, b)
	}
	return string(b)
}

func runHelp(t *testing.T, bin string, args ...string) map[string]bool {
	t.Helper()
	flags := map[string]bool{}
	for _, m := range flagName.FindAllStringSubmatch(help(t, bin, args...), -1) {
		flags[m[1]] = true
	}
	return flags
}

// vgpuctl describe node --usage finds each node's monitor by its defaults:
// a pod in the monitor namespace matching a label selector, on a port. The
// monitor DaemonSet must be what those defaults look for.
func TestVgpuctlFindsTheMonitor(t *testing.T) {
	out := help(t, build(t, "vgpuctl"), "describe", "node")
	def := func(flag string) string {
		m := regexp.MustCompile(`--` + flag + ` \S+\s.*\(default "?([^")]+)"?\)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("vgpuctl describe node has no default for --%s:\n%s", flag, out)
		}
		return m[1]
	}
	sel, err := labels.Parse(def("monitor-selector"))
	if err != nil {
		t.Fatal(err)
	}
	port, ns := def("monitor-port"), def("monitor-namespace")
	ds := find[*appsv1.DaemonSet](t, render(t, "overlays/binpack"), "vgpu-monitor")
	if ds.Namespace != ns || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("vgpuctl looks for monitor pods %q in %s; the DaemonSet's pods are labelled %v in %s", sel, ns, ds.Spec.Template.Labels, ds.Namespace)
	}
	found := false
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		found = found || itoa(p.ContainerPort) == port
	}
	if !found {
		t.Errorf("vgpuctl reaches the monitor on port %s, which the monitor container does not declare", port)
	}
}

// manifestFlags returns the --flags each image is started with, over every
// overlay.
func manifestFlags(t *testing.T) map[string]map[string]bool {
	images := baseImages(t)
	short := map[string]string{}
	for s, full := range images {
		short[full] = s
	}
	out := map[string]map[string]bool{}
	for _, dir := range []string{"overlays/binpack"} {
		for _, w := range workloads(render(t, dir)) {
			for _, c := range append(append([]corev1.Container{}, w.spec.InitContainers...), w.spec.Containers...) {
				img := short[c.Image]
				if out[img] == nil {
					out[img] = map[string]bool{}
				}
				for _, a := range append(append([]string{}, c.Command...), c.Args...) {
					if name, ok := strings.CutPrefix(a, "--"); ok {
						out[img][strings.SplitN(name, "=", 2)[0]] = true
					}
				}
			}
		}
	}
	return out
}

// Every flag the manifests pass to a binary is one that binary defines: a
// renamed flag fails here, not in a crash-looping pod.
func TestManifestFlagsExistInTheBinaries(t *testing.T) {
	for img, flags := range manifestFlags(t) {
		t.Run(img, func(t *testing.T) {
			var have map[string]bool
			if binary, ok := binaryOfImage[img]; ok {
				have = helpFlags(t, binary)
			} else if img == "kube-scheduler" {
				bin := kubeScheduler()
				if bin == "" {
					t.Skip("kube-scheduler is not built yet (make tools)")
				}
				have = runHelp(t, bin)
			} else {
				t.Fatalf("no binary known for image %s", img)
			}
			for f := range flags {
				if !have[f] {
					t.Errorf("the manifests pass --%s, which %s does not define", f, img)
				}
			}
		})
	}
}

// kubeScheduler finds the kube-scheduler that `make tools` builds.
func kubeScheduler() string {
	if d := os.Getenv("VGPU_KUBE_BIN_DIR"); d != "" {
		return filepath.Join(d, "kube-scheduler")
	}
	m, _ := filepath.Glob(filepath.Join(root(), "..", ".cache", "k8s-*", "kube-scheduler"))
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}

// Every daemon takes its logging, Kubernetes client and health/metrics
// address under the same names, and the two that share a GPU node do not
// default to the same port.
func TestDaemonsShareFlagNamesAndNotPorts(t *testing.T) {
	common := []string{"log-level", "kubeconfig", "kube-api-qps", "kube-api-burst", "metrics-address"}
	nodePorts := map[string]string{}
	for _, binary := range []string{"extender", "webhook", "deviceplugin", "monitor"} {
		out := help(t, build(t, binary))
		flags := runHelp(t, build(t, binary))
		for _, f := range common {
			if !flags[f] {
				t.Errorf("%s has no --%s", binary, f)
			}
		}
		if binary == "deviceplugin" || binary == "monitor" {
			m := regexp.MustCompile(`--metrics-address \S+\s.*\(default "([^"]*)"\)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("%s --metrics-address has no default", binary)
			}
			if other, ok := nodePorts[m[1]]; ok {
				t.Errorf("%s and %s both default --metrics-address to %s on the same node", other, binary, m[1])
			}
			nodePorts[m[1]] = binary
		}
	}
}
