package kustomizetest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/test/cluster"
)

// outsideTheCluster are the flags that stand in, for a process run on the
// test machine, for what the cluster gives the container: credentials
// (in-cluster config), the node name (downward API), mock GPUs (the NVIDIA
// runtime), and scratch directories in place of the hostPath volumes, whose
// host paths must not be touched on the test machine. They come after the
// manifest's own flags, so they win.
func outsideTheCluster(binary, kubeconfig, node, scratch string) []string {
	args := []string{"--kubeconfig=" + kubeconfig}
	switch binary {
	case "deviceplugin":
		args = append(args, "--node-name="+node, "--nvml=mock:a100-80gb",
			"--kubelet-socket-dir="+scratch+"/device-plugins", "--host-root="+scratch+"/vgpu")
	case "monitor":
		args = append(args, "--node-name="+node, "--nvml=mock:a100-80gb",
			"--host-root="+scratch+"/vgpu", "--proc-root=/proc")
	}
	return args
}

var hostPortArg = regexp.MustCompile(`^(--[a-z-]+=)([0-9.]*):(\d+)$`)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Each vgpu binary, started with the flags its manifest gives it, serves its
// readiness and liveness probes where the manifest's probes look for them
// (path, scheme, port). Listen ports are moved to free ones, consistently, so
// that the test does not collide with anything else on the machine.
func TestE2EComponentsAnswerTheirProbes(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a := newApplier(t, c)
	objs := render(t, "overlays/binpack")
	for _, first := range []bool{true, false} {
		for _, o := range objs {
			if (o.gvk.Kind == "Namespace") == first {
				if err := a.apply(ctx, o, "", false); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// The node agents' Node. (Not test/gpunode: it links go-nvml, which
	// cannot load in a binary that also links kustomize's use of package
	// plugin, built with immediate binding.)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-0", Labels: map[string]string{contract.LabelGPUNode: "true"}}}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	short := map[string]string{}
	for s, full := range baseImages(t) {
		short[full] = s
	}
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, w := range workloads(objs) {
		for _, ctr := range w.spec.Containers {
			binary, ok := binaryOfImage[short[ctr.Image]]
			if !ok {
				continue // kube-scheduler: the stock binary and its standard endpoints
			}
			// Move every host:port flag to a free loopback port.
			moved := map[int32]int{}
			var args []string
			for _, arg := range ctr.Args {
				if m := hostPortArg.FindStringSubmatch(arg); m != nil {
					p, _ := strconv.Atoi(m[3])
					moved[int32(p)] = freePort(t)
					arg = fmt.Sprintf("%s127.0.0.1:%d", m[1], moved[int32(p)])
				}
				args = append(args, arg)
			}
			args = append(args, outsideTheCluster(binary, c.Kubeconfig, node.Name, t.TempDir())...)
			url := func(p *corev1.Probe) string {
				var port int32
				for _, cp := range ctr.Ports {
					if cp.Name == p.HTTPGet.Port.String() {
						port = cp.ContainerPort
					}
				}
				scheme := "http"
				if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
					scheme = "https"
				}
				return fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, moved[port], p.HTTPGet.Path)
			}
			get := func(ctx context.Context, u string) error {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				resp, err := insecure.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("%s: %s: %s", u, resp.Status, body)
				}
				return nil
			}
			t.Run(w.name+"/"+ctr.Name, func(t *testing.T) {
				if ctr.ReadinessProbe == nil || ctr.LivenessProbe == nil {
					t.Fatal("no probes")
				}
				ready, live := url(ctr.ReadinessProbe), url(ctr.LivenessProbe)
				if slices.Contains([]string{ready, live}, "") {
					t.Fatal("probe on an undeclared port")
				}
				name := "probe-" + binary
				err := c.StartProcess(ctx, name, build(t, binary), args, func(ctx context.Context) error { return get(ctx, ready) })
				if err != nil {
					t.Fatalf("%s %v: readiness probe %s never answered 200: %v (log: %s)", binary, args, ready, err, c.LogPath(name))
				}
				defer c.StopProcess(name)
				if err := get(ctx, live); err != nil {
					t.Errorf("liveness probe: %v", err)
				}
			})
		}
	}
}
