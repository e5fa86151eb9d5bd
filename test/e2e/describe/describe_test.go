// Package describe checks `vgpuctl describe node` and the node monitor
// against a real control plane: real API server and kube-scheduler with
// vgpu's extender, kwok nodes whose inventory comes from go-nvml's mock, pods
// run by kwok. The binaries are built and run as a user runs them, with a
// kubeconfig.
package describe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/region"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

const ns = "e2e-describe"

// app labels the suite's pods, which its waits select.
var app = testutil.Labels(map[string]string{"app": "describe"})

// build returns one of vgpu's binaries as `make build` made it.
func build(t *testing.T, name string) string {
	t.Helper()
	bin, err := daemons.Binary(name)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, bin, kubeconfig string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, append(append([]string{}, args...), "--kubeconfig", kubeconfig)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errOut.String(), code}
}

// normalize replaces the mock's random GPU uuids by their index in the
// node's inventory so that the output can be compared with a golden file.
func normalize(s string, uuids map[string]string) string {
	return regexp.MustCompile(`GPU-[0-9a-f-]{36}`).ReplaceAllStringFunc(s, func(u string) string {
		if n, ok := uuids[u]; ok {
			return n
		}
		return "GPU-UNKNOWN"
	})
}

// startExtender runs vgpu's extender and points kube-scheduler at it with
// the scheduler configuration the manifests ship.
func startExtender(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	t.Helper()
	listen, health := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, err := daemons.SchedulerConfig("http://" + listen)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--kubeconfig", c.Kubeconfig, "--listen", listen, "--metrics-address", health}
	if err := c.StartProcess(ctx, "extender", build(t, "extender"), args, cluster.HTTPReady("http://"+health+"/readyz")); err != nil {
		t.Fatalf("extender: %v (log %s)", err, c.LogPath("extender"))
	}
	c.SetSchedulerConfig(cfg)
	if err := c.StartScheduler(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDescribeNodeOnControlPlane places pods with the real kube-scheduler
// and vgpu's extender, then describes the node as a user would.
func TestDescribeNodeOnControlPlane(t *testing.T) {
	c := cluster.Run(t, cluster.Options{NoScheduler: true})
	bin := build(t, "vgpuctl")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	nodes, err := gpunode.Create(ctx, c.Client, gpunode.Spec{Prefix: "gpu-node", Count: 1, GPUs: 3, Model: gpunode.A100_40GB, SplitCount: 10})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := gpunode.Create(ctx, c.Client, gpunode.Spec{Prefix: "no-inventory", Count: 1, GPUs: 1, NoInventory: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForNodesReady(ctx, append(nodes, plain...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startExtender(t, ctx, c)

	target := nodes[0]
	node, err := c.Client.CoreV1().Nodes().Get(ctx, target, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := annotation.DecodeDevices(node.Annotations[contract.AnnotationDevices])
	if err != nil {
		t.Fatal(err)
	}
	uuids := map[string]string{}
	for _, g := range inv.GPUs {
		uuids[g.UUID] = fmt.Sprintf("GPU-<%d>", g.Index)
	}

	pods := []*corev1.Pod{
		testutil.Pod("train-0", testutil.Namespace(ns), app, testutil.Container("trainer", contract.ResourceMemory, "16384", contract.ResourceCores, "30")),
		testutil.Pod("train-1", testutil.Namespace(ns), app, testutil.Container("trainer", contract.ResourceMemory, "8192", contract.ResourceCores, "30")),
		testutil.Pod("infer", testutil.Namespace(ns), app, testutil.InitContainer("fetch", contract.ResourceMemory, "20480"),
			testutil.Container("server", contract.ResourceMemory, "10240"), testutil.Container("metrics", contract.ResourceMemory, "1024", contract.ResourceCores, "10")),
		testutil.Pod("notebook", testutil.Namespace(ns), app, testutil.Container("jupyter", contract.ResourceMemoryPercentage, "10", contract.ResourceCores, "20")),
		testutil.Pod("ddp", testutil.Namespace(ns), app, testutil.Container("worker", contract.ResourceGPU, "2", contract.ResourceMemory, "4096", contract.ResourceCores, "25")),
	}
	// One at a time, so that the GPU policy sees them in a fixed order
	// (creation timestamps have one-second resolution).
	for _, p := range pods {
		p.Labels["pod"] = p.Name
		p.Spec.SchedulerName = contract.DefaultSchedulerName
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitForPods(ctx, ns, "pod="+p.Name, 1, cluster.PodRunning); err != nil {
			t.Fatalf("%s: %v (extender log %s)", p.Name, err, c.LogPath("extender"))
		}
	}
	// A pod without GPUs on the node: not shown.
	web := testutil.Pod("web", testutil.Namespace(ns), app, testutil.Container("nginx"))
	web.Spec.NodeName = target
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running, err := c.WaitForPods(ctx, ns, "app=describe", len(pods)+1, cluster.PodRunning)
	if err != nil {
		t.Fatal(err)
	}
	// The books, rebuilt from what the extender wrote at bind.
	books := ledger.New()
	books.SetInventory(target, inv)
	for _, p := range running {
		v, ok := p.Annotations[contract.AnnotationAssignment]
		if !ok {
			continue
		}
		a, err := annotation.DecodeAssignment(v)
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		if a.Node != target || p.Spec.NodeName != target {
			t.Fatalf("pod %s bound to %s, assigned on %s; want %s", p.Name, p.Spec.NodeName, a.Node, target)
		}
		if err := books.Reserve(ns+"/"+p.Name, a); err != nil {
			t.Fatalf("the extender's assignments overcommit: %v", err)
		}
	}

	// As a user who may only get and list nodes and pods.
	r := run(t, bin, readOnly(t, ctx, c), "describe", "node", target)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("describe node %s: exit %d, stderr %q", target, r.code, r.stderr)
	}
	testutil.Golden(t, "node", normalize(r.stdout, uuids))

	// The numbers, from the JSON form, against the books: what describe
	// shows is what the scheduler holds.
	r = run(t, bin, c.Kubeconfig, "describe", "node", target, "-o", "json")
	var rep struct {
		GPUs []struct {
			UUID               string `json:"uuid"`
			MemoryAllocatedMiB int64  `json:"memoryAllocatedMiB"`
			CoresAllocated     int    `json:"coresAllocated"`
			SlotsUsed          int    `json:"slotsUsed"`
		} `json:"gpus"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	state := books.State(target)
	if len(rep.GPUs) != len(state) {
		t.Fatalf("%d GPUs shown, the node has %d", len(rep.GPUs), len(state))
	}
	for i, g := range rep.GPUs {
		u := state[i].Used
		if g.UUID != state[i].GPU.UUID || g.MemoryAllocatedMiB != u.MemoryMiB || g.CoresAllocated != u.Cores || g.SlotsUsed != u.Slots {
			t.Errorf("GPU %d: shown %+v, booked %+v", i, g, u)
		}
	}

	r = run(t, bin, c.Kubeconfig, "describe", "node")
	if r.code != 0 {
		t.Fatalf("describe node: exit %d, stderr %q", r.code, r.stderr)
	}
	testutil.Golden(t, "list", r.stdout)

	r = run(t, bin, c.Kubeconfig, "describe", "node", "no-such-node")
	if r.code != 1 || !strings.Contains(r.stderr, `Error from server (NotFound): nodes "no-such-node" not found`) {
		t.Errorf("missing node: exit %d, stderr %q", r.code, r.stderr)
	}
	r = run(t, bin, c.Kubeconfig, "describe", "node", plain[0])
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("node %q has no vgpu GPU inventory", plain[0])) {
		t.Errorf("node without inventory: exit %d, stderr %q", r.code, r.stderr)
	}
}

// readOnly is a kubeconfig of a user who may only get and list nodes and
// pods: all describe needs.
func readOnly(t *testing.T, ctx context.Context, c *cluster.Cluster) string {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-describe-e2e"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"get", "list"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-describe-e2e"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "describer"}}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc, err := c.UserKubeconfig("describer", "describer")
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// regionFile writes a container's shared region as libvgpu would.
func regionFile(t *testing.T, dir string, pod *corev1.Pod, ctr string, enforced bool, devs ...region.Device) string {
	t.Helper()
	r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: uint32(len(devs))}}
	if !enforced {
		r.Header.Flags, r.Header.Reason, r.Header.ReasonText = region.FlagUnenforced, region.ReasonNoUtilFeed,
			"no utilisation samples from the vgpu monitor: compute limits are not applied"
	}
	copy(r.Devices[:], devs)
	r.Processes[0] = region.Process{PID: 1, State: region.ProcActive}
	d := filepath.Join(dir, contract.ContainerDirName(string(pod.UID), ctr))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d, contract.RegionFileName)
	if err := os.WriteFile(path, r.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runMonitor starts the real monitor for node on loopback, with go-nvml's
// mock for NVML, regions under root and its own least-privilege identity.
func runMonitor(t *testing.T, ctx context.Context, c *cluster.Cluster, node, root string, extra ...string) string {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-monitor-e2e"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "pods"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{contract.SettingsConfigMap}, Verbs: []string{"get", "list", "watch"}}}}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bind := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "vgpu-monitor-e2e"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "monitor"}}}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc, err := c.UserKubeconfig("monitor", "monitor")
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--kubeconfig", kc, "--node-name", node, "--host-root", root, "--proc-root", filepath.Join(root, "proc"),
		"--nvml", gpunode.MockFlag(gpunode.A100_40GB, 3), "--metrics-address", addr, "--stale-grace", "1s", "--sweep-interval", "200ms"}
	args = append(args, extra...)
	err = c.StartProcess(ctx, "monitor", build(t, "monitor"), args, cluster.HTTPReady("http://"+addr+"/readyz"))
	if err != nil {
		t.Fatalf("monitor: %v (log %s)", err, c.LogPath("monitor"))
	}
	return addr
}

// gpuNodes creates count kwok GPU nodes (3 A100s each) and the test's
// namespace, and returns the nodes and the first one's inventory.
func gpuNodes(t *testing.T, ctx context.Context, c *cluster.Cluster, count int) ([]string, device.Inventory) {
	t.Helper()
	nodes, err := gpunode.Create(ctx, c.Client, gpunode.Spec{Prefix: "gpu-node", Count: count, GPUs: 3, Model: gpunode.A100_40GB})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForNodesReady(ctx, nodes...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node, err := c.Client.CoreV1().Nodes().Get(ctx, nodes[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := annotation.DecodeDevices(node.Annotations[contract.AnnotationDevices])
	if err != nil {
		t.Fatal(err)
	}
	return nodes, inv
}

// bindOnNode creates the pods bound to node, with assignments from
// lib/placement (the code the extender binds with), and returns them by name.
func bindOnNode(t *testing.T, ctx context.Context, c *cluster.Cluster, node string, inv device.Inventory, pods ...*corev1.Pod) map[string]*corev1.Pod {
	t.Helper()
	books := ledger.New()
	books.SetInventory(node, inv)
	pol := placement.DefaultPolicies(settings.Default())
	created := map[string]*corev1.Pod{}
	for _, p := range pods {
		rp, err := request.FromPod(p)
		if err != nil {
			t.Fatal(err)
		}
		a, err := placement.Bind(books, ns+"/"+p.Name, rp, node, pol)
		if err != nil {
			t.Fatal(err)
		}
		testutil.Assigned(a)(p)
		if created[p.Name], err = c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return created
}

// TestMonitorAndUsageOnControlPlane runs the real monitor against the real
// API server: it names regions through its node-limited pod informer,
// describe --usage shows what it measures, and the region of a deleted pod
// is removed after the grace period. Here the pods are bound directly, with
// assignments from lib/placement (the code the extender binds with): the
// scheduler's path is TestDescribeNodeOnControlPlane's.
func TestMonitorAndUsageOnControlPlane(t *testing.T) {
	c := cluster.Run(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodes, inv := gpuNodes(t, ctx, c, 2)
	target := nodes[0]
	created := bindOnNode(t, ctx, c, target, inv,
		testutil.Pod("train-0", testutil.Namespace(ns), app, testutil.Container("trainer", contract.ResourceMemory, "16384", contract.ResourceCores, "30")),
		testutil.Pod("infer", testutil.Namespace(ns), app, testutil.Container("server", contract.ResourceMemory, "8192")),
		testutil.Pod("gone", testutil.Namespace(ns), app, testutil.Container("job", contract.ResourceMemory, "4096", contract.ResourceCores, "10")))
	// A pod of the same name on the other node must not be confused.
	other := testutil.Pod("train-0-elsewhere", testutil.Namespace(ns), app, testutil.Container("trainer"))
	other.Spec.NodeName = nodes[1]
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPods(ctx, ns, "app=describe", 4, cluster.PodRunning); err != nil {
		t.Fatal(err)
	}
	uuidOf := func(p *corev1.Pod) string {
		a, err := annotation.DecodeAssignment(p.Annotations[contract.AnnotationAssignment])
		if err != nil {
			t.Fatal(err)
		}
		return a.Containers[0].Devices[0].UUID
	}

	root := t.TempDir()
	dir := filepath.Join(root, "containers")
	regionFile(t, dir, created["train-0"], "trainer", true,
		region.Device{UUID: uuidOf(created["train-0"]), MemLimit: 16384 << 20, MemUsed: 6000 << 20, CoreLimit: 30})
	regionFile(t, dir, created["infer"], "server", false,
		region.Device{UUID: uuidOf(created["infer"]), MemLimit: 8192 << 20, MemUsed: 1234 << 20})
	goneDir := regionFile(t, dir, created["gone"], "job", true,
		region.Device{UUID: uuidOf(created["gone"]), MemLimit: 4096 << 20, CoreLimit: 10})
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := runMonitor(t, ctx, c, target, root)

	bin := build(t, "vgpuctl")
	kc := readOnly(t, ctx, c)
	r := run(t, bin, kc, "describe", "node", target, "--usage", "--monitor-address", addr)
	if r.code != 0 {
		t.Fatalf("describe --usage as a get/list-only user: exit %d, stderr %q", r.code, r.stderr)
	}
	uuids := map[string]string{}
	for _, g := range inv.GPUs {
		uuids[g.UUID] = fmt.Sprintf("GPU-<%d>", g.Index)
	}
	testutil.Golden(t, "node-usage", strings.ReplaceAll(normalize(r.stdout, uuids), addr, "MONITOR"))

	// The deleted pod's region goes after the 1 s grace; the others stay.
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "gone", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(goneDir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there 30 s after its pod was deleted (monitor log %s)", goneDir, c.LogPath("monitor"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("%d region directories left, want the 2 of live pods", len(entries))
	}

	// Unreachable monitor: allocation still shown, with a clear note.
	c.StopProcess("monitor")
	r = run(t, bin, kc, "describe", "node", target, "--usage", "--monitor-address", addr, "--usage-timeout", "1s")
	if r.code != 0 || !strings.Contains(r.stdout, "Usage:          unavailable, showing allocation only (monitor "+addr) {
		t.Errorf("monitor stopped: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
