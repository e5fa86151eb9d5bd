package realnode

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/test/daemons"
)

// cdiDir is where the dra overlay's node agent writes CDI specs and the
// harness's containerd reads them.
const cdiDir = "/var/run/cdi"

// The real node switches from the extender path to the DRA path as
// docs/dra.md says (cordon, drain the GPU pods, apply the other overlay,
// uncordon), runs seed-style pods there, and switches back.
//
// On the DRA path a pod written as in the seed goes through the webhook to
// a claim, kube-scheduler allocates it, the node agent prepares it for the
// real kubelet, and containerd starts the container with the CDI device's
// edits: inside it libvgpu enforces the 3000 MiB, the claim's region is on
// the host, the monitor exports its usage and `vgpuctl describe node
// --usage` shows it. A second pod on the same GPU gets its own limit; a pod
// with its own claim shares it between two containers. The node agent and
// the kubelet restart under the running pods. Deleting the pods frees the
// claims (kube-controller-manager) and unprepares them: no CDI spec and no
// region directory is left.
func TestSeedStylePodsOnTheDRAPath(t *testing.T) {
	installed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	node := c.RealNodeName()

	start := time.Now()
	switchPath(ctx, t, "overlay-dra", func() string {
		if n := sliceDevices(ctx, t); n != mockGPUs {
			return fmt.Sprintf("the node's ResourceSlice of driver %s has %d devices, want %d", dra.Driver, n, mockGPUs)
		}
		if n := allocatableGPUs(ctx, t); n != 0 {
			return fmt.Sprintf("the kubelet still offers %d %s", n, contract.ResourceGPU)
		}
		return ""
	})
	fmt.Printf("realnode: switched %s to the DRA path in %s\n", node, time.Since(start).Round(time.Millisecond))

	const ns = "realnode-dra"
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	first := createDRAPod(ctx, t, ns, workloadPod("first", "2900", "200"))
	second := createDRAPod(ctx, t, ns, workloadPod("second", "3100", "2000"))
	shared := createSharedClaimPod(ctx, t, ns)

	// What each program printed inside its container. The shared pod's
	// claim (1000Mi, 20 cores) is used by both its containers: each sees
	// the claim's limit.
	for _, w := range []struct {
		pod, ctr string
		lines    []string
		why      string
	}{
		{first.Name, "cuda", []string{"alloc 2900 ok", "alloc 200 oom", "total=3000"}, "libvgpu does not enforce 3000 MiB in the container"},
		{second.Name, "cuda", []string{"alloc 3100 oom", "alloc 2000 ok", "total=3000"}, "the second pod does not get its own 3000 MiB"},
		{shared.Name, "a", []string{"alloc 600 ok", "total=1000"}, "a container of a pod's own claim does not get the claim's 1000 MiB"},
		{shared.Name, "b", []string{"alloc 300 ok", "total=1000"}, "a second container of the claim does not get its 1000 MiB"},
	} {
		out := waitForLog(ctx, t, ns, w.pod, w.ctr, "meminfo")
		for _, line := range w.lines {
			if !strings.Contains(out, line) {
				t.Errorf("pod %s container %s on the DRA path: output lacks %q: %s:\n%s", w.pod, w.ctr, line, w.why, out)
			}
		}
	}

	// Each pod's claim: allocated by kube-scheduler with the seed's limits
	// as consumed capacity, both on the same GPU (first fit,
	// docs/dra.md#policies), and prepared into its own region and CDI spec.
	claims := map[string]*resourcev1.ResourceClaim{}
	for _, name := range []string{first.Name, second.Name} {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		claim := podClaim(ctx, t, p)
		claims[name] = claim
		res := claim.Status.Allocation.Devices.Results
		if len(res) != 1 || res[0].Driver != dra.Driver || res[0].Pool != node {
			t.Fatalf("pod %s: claim %s is allocated %+v, want one device of %s on %s", name, claim.Name, res, dra.Driver, node)
		}
		mem, cores := res[0].ConsumedCapacity[dra.CapMemory], res[0].ConsumedCapacity[dra.CapCores]
		if mem.Value() != 3000<<20 || cores.Value() != 30 {
			t.Errorf("pod %s: claim %s consumes memory %s and cores %s, want 3000Mi and 30", name, claim.Name, mem.String(), cores.String())
		}
		spec := filepath.Join(cdiDir, "vgpu.io-gpu_"+string(claim.UID)+".json")
		if _, err := os.Stat(spec); err != nil {
			t.Errorf("pod %s: the CDI spec of its claim: %v", name, err)
		}
		env, mounts := containerSpec(ctx, t, p, "cuda")
		region := env[contract.EnvRegion]
		host := mounts[filepath.Dir(region)]
		if want := filepath.Join(contract.HostClaimsDir, contract.ClaimDirName(string(claim.UID), dra.RequestName)); host != want {
			t.Errorf("pod %s: its container's %s=%s is in %q on the host, want its claim's region directory %s", name, contract.EnvRegion, region, host, want)
		}
		if entries, err := os.ReadDir(host); err != nil || len(entries) == 0 {
			t.Errorf("pod %s: the claim's region directory %s on the host: %v (entries %v)", name, host, err, entries)
		}
		if mounts[contract.ContainerLimitsPath] == "" || mounts[contract.ContainerPreloadPath] == "" {
			t.Errorf("pod %s: the container lacks the limits file or ld.so.preload mount of the CDI device: %v", name, mounts)
		}
	}
	// The shared pod's containers share the claim's one region, so the
	// monitor reports their usage together, under each of their names.
	sp, err := c.Client.CoreV1().Pods(ns).Get(ctx, shared.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	claims[shared.Name] = podClaim(ctx, t, sp)
	envA, mountsA := containerSpec(ctx, t, sp, "a")
	_, mountsB := containerSpec(ctx, t, sp, "b")
	if dir := filepath.Dir(envA[contract.EnvRegion]); mountsA[dir] == "" || mountsA[dir] != mountsB[dir] {
		t.Errorf("pod %s: containers a and b of one claim have regions %q and %q, want the claim's one", shared.Name, mountsA[dir], mountsB[dir])
	}
	for _, ctr := range []string{"a", "b"} {
		waitMetric(ctx, t, ns, shared.Name, "vgpu_container_memory_used_bytes", fmt.Sprintf("container=%q", ctr), 900<<20)
	}

	containerIDs := map[string]string{first.Name: containerID(ctx, t, ns, first.Name), second.Name: containerID(ctx, t, ns, second.Name)}
	if a, b := claims[first.Name].Status.Allocation.Devices.Results[0].Device, claims[second.Name].Status.Allocation.Devices.Results[0].Device; a != b {
		t.Errorf("the two 3000 MiB shares went to %s and %s, want the same GPU (first fit)", a, b)
	}

	metrics := monitorMetricsOf(ctx, t, ns, first.Name)
	if used := metricValue(t, metrics, "vgpu_container_memory_used_bytes", fmt.Sprintf(`namespace=%q,node=%q,pod="first"`, ns, node)); used != 2900<<20 {
		t.Errorf("monitor: vgpu_container_memory_used_bytes of pod first = %v, want 2900 MiB (%d)\n%s", used, 2900<<20, grep(metrics, "vgpu_container"))
	}

	bin, err := daemons.Binary("vgpuctl")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := exec.CommandContext(ctx, bin, "describe", "node", node, "--usage", "--kubeconfig", c.Kubeconfig).CombinedOutput()
	fmt.Printf("realnode: on the DRA path, vgpuctl describe node %s --usage:\n%s", node, desc)
	if err != nil {
		t.Fatalf("vgpuctl describe node --usage: %v\n%s", err, desc)
	}
	if !usageRow(string(desc), "first", "cuda", "2900 MiB", "yes") || !usageRow(string(desc), "second", "cuda", "2000 MiB", "yes") ||
		!usageRow(string(desc), "shared", "a,b", "900 MiB", "yes") {
		t.Errorf("vgpuctl describe node --usage does not show the containers of pods first, second and shared, enforced, with their 2900, 2000 and 900 MiB in use:\n%s", desc)
	}

	// The node agent keeps nothing in memory: a new one registers with
	// the kubelet again and unprepares what the old one prepared (below).
	restartNodeAgent(ctx, t)
	// A kubelet restart keeps the claims prepared and the containers
	// running (it may prepare them again: the same files, the same answer).
	if err := c.RestartKubelet(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{first.Name, second.Name} {
		if id := containerID(ctx, t, ns, name); id != containerIDs[name] {
			t.Errorf("pod %s: after a kubelet restart its container is %s, was %s", name, id, containerIDs[name])
		}
	}
	if out := podLogs(ns, first.Name, "cuda"); strings.Count(out, "meminfo") != 1 {
		t.Errorf("pod %s: its program ran again after the kubelet restart:\n%s", first.Name, out)
	}

	// Deleting the pods frees and unprepares their claims.
	for _, name := range []string{first.Name, second.Name, shared.Name} {
		if err := c.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, claim := range claims {
		waitUnprepared(ctx, t, claim)
	}

	start = time.Now()
	switchPath(ctx, t, "overlay", func() string {
		if n := sliceDevices(ctx, t); n != 0 {
			return fmt.Sprintf("the node still publishes %d devices of driver %s", n, dra.Driver)
		}
		if n := allocatableGPUs(ctx, t); n != mockGPUs*splitCount {
			return fmt.Sprintf("the kubelet offers %d %s, want %d", n, contract.ResourceGPU, mockGPUs*splitCount)
		}
		return ""
	})
	fmt.Printf("realnode: switched %s back to the extender path in %s\n", node, time.Since(start).Round(time.Millisecond))
}

// switchPath switches the real node to the vgpu install of overlay as
// docs/dra.md#one-gpu-one-booking says: cordon, drain the GPU pods, apply,
// wait until the node agent runs the new mode (onPath says what is still
// missing, "" when nothing), uncordon, and wait for every vgpu workload.
func switchPath(ctx context.Context, t *testing.T, overlay string, onPath func() string) {
	t.Helper()
	node := c.RealNodeName()
	if _, err := c.Kubectl(ctx, "cordon", node); err != nil {
		t.Fatal(err)
	}
	drainGPUPods(ctx, t)
	if _, err := c.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatal(err)
	}
	// The node agents are DaemonSets: they roll on the cordoned node; the
	// webhook's new pod waits for the uncordon.
	for _, ds := range []string{"vgpu-device-plugin", "vgpu-monitor"} {
		if out, err := c.Kubectl(ctx, "-n", namespace, "rollout", "status", "daemonset/"+ds, "--timeout=2m"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	for {
		missing := onPath()
		if missing == "" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after kubectl apply -k %s: %s", overlay, missing)
		case <-time.After(500 * time.Millisecond):
		}
	}
	if _, err := c.Kubectl(ctx, "uncordon", node); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"daemonset/vgpu-device-plugin", "daemonset/vgpu-monitor", "deployment/vgpu-webhook", "deployment/vgpu-scheduler"} {
		if out, err := c.Kubectl(ctx, "-n", namespace, "rollout", "status", d, "--timeout=2m"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	for {
		notReady, err := workloadsNotReady(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if crash := crashing(ctx); crash != "" {
			t.Fatalf("after kubectl apply -k %s: %s", overlay, crash)
		}
		if len(notReady) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not Ready after kubectl apply -k %s: %s", overlay, strings.Join(notReady, "; "))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// drainGPUPods deletes the pods on the node that use vGPUs on either path
// and waits until they are gone and their region directories too.
func drainGPUPods(ctx context.Context, t *testing.T) {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", c.RealNodeName()).String()})
	if err != nil {
		t.Fatal(err)
	}
	var gpuPods []corev1.Pod
	for _, p := range pods.Items {
		if p.Namespace != namespace && usesGPU(&p) {
			gpuPods = append(gpuPods, p)
			if err := c.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	for {
		var left []string
		for _, p := range gpuPods {
			if _, err := c.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, p.Namespace+"/"+p.Name)
			}
		}
		regions, _ := filepath.Glob(filepath.Join(contract.HostContainersDir, "*"))
		claimRegions, _ := filepath.Glob(filepath.Join(contract.HostClaimsDir, "*"))
		if len(left) == 0 && len(regions) == 0 && len(claimRegions) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("draining the node: GPU pods %v, regions %v %v left", left, regions, claimRegions)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func usesGPU(p *corev1.Pod) bool {
	if len(p.Spec.ResourceClaims) > 0 {
		return true
	}
	for _, ctr := range p.Spec.Containers {
		if _, ok := ctr.Resources.Limits[corev1.ResourceName(contract.ResourceGPU)]; ok {
			return true
		}
	}
	return false
}

// createDRAPod creates a seed-style pod and checks what the webhook made
// of it: a claim from a template in place of the nvidia.com limits, and
// the stock scheduler.
func createDRAPod(ctx context.Context, t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s as the seed writes it, on the DRA path: %v", pod.Name, err)
	}
	ctr := p.Spec.Containers[0]
	if len(p.Spec.ResourceClaims) != 1 || p.Spec.ResourceClaims[0].ResourceClaimTemplateName == nil || len(ctr.Resources.Claims) != 1 {
		t.Fatalf("pod %s: the webhook did not turn its limits into a claim from a template: claims %+v, container claims %+v", p.Name, p.Spec.ResourceClaims, ctr.Resources.Claims)
	}
	for r := range ctr.Resources.Limits {
		if strings.HasPrefix(string(r), "nvidia.com/") {
			t.Errorf("pod %s: limit %s left beside the claim", p.Name, r)
		}
	}
	if p.Spec.SchedulerName != corev1.DefaultSchedulerName {
		t.Errorf("pod %s: schedulerName %q, want the stock %q", p.Name, p.Spec.SchedulerName, corev1.DefaultSchedulerName)
	}
	return p
}

// createSharedClaimPod creates a claim template as a user writes one
// (docs/dra.md) and a pod whose two containers, a and b, use one claim
// from it; a allocates 600 MiB, b 300 MiB.
func createSharedClaimPod(ctx context.Context, t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	tmpl := &resourcev1.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: "thousand-mib", Namespace: ns},
		Spec: resourcev1.ResourceClaimTemplateSpec{Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{
			Requests: []resourcev1.DeviceRequest{{Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{
				DeviceClassName: dra.DeviceClass,
				Capacity: &resourcev1.CapacityRequirements{Requests: map[resourcev1.QualifiedName]resource.Quantity{
					dra.CapMemory: resource.MustParse("1000Mi"), dra.CapCores: resource.MustParse("20")}},
			}}},
		}}},
	}
	if _, err := c.Client.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, tmpl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := workloadPod("shared", "600")
	a := p.Spec.Containers[0]
	a.Name, a.Resources = "a", corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "gpu"}}}
	b := a
	b.Name, b.Args = "b", []string{"300"}
	p.Spec.Containers = []corev1.Container{a, b}
	p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: &tmpl.Name}}
	p, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating a pod with its own claim of class %s: %v", dra.DeviceClass, err)
	}
	return p
}

// waitForLog waits until the container's log on the node holds marker.
func waitForLog(ctx context.Context, t *testing.T, ns, pod, container, marker string) string {
	t.Helper()
	for {
		out := podLogs(ns, pod, container)
		if strings.Contains(out, marker) {
			return out
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s container %s printed no %q: %q", pod, container, marker, out)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitMetric waits until the monitor exports want for the sample of name
// of pod ns/pod whose labels also hold label.
func waitMetric(ctx context.Context, t *testing.T, ns, pod, name, label string, want float64) {
	t.Helper()
	for {
		metrics := monitorMetricsOf(ctx, t, ns, pod)
		for _, l := range strings.Split(metrics, "\n") {
			f := strings.Fields(l)
			if strings.HasPrefix(l, name+"{") && strings.Contains(l, label) && strings.Contains(l, fmt.Sprintf("pod=%q", pod)) && len(f) > 1 {
				if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil && v == want {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the monitor exports no %s{%s} of pod %s/%s = %v:\n%s", name, label, ns, pod, want, grep(metrics, name))
		case <-time.After(time.Second):
		}
	}
}

// podClaim is the allocated ResourceClaim kube-controller-manager made for
// the pod from its template.
func podClaim(ctx context.Context, t *testing.T, p *corev1.Pod) *resourcev1.ResourceClaim {
	t.Helper()
	if len(p.Status.ResourceClaimStatuses) != 1 || p.Status.ResourceClaimStatuses[0].ResourceClaimName == nil {
		t.Fatalf("pod %s: status names no claim: %+v", p.Name, p.Status.ResourceClaimStatuses)
	}
	claim, err := c.Client.ResourceV1().ResourceClaims(p.Namespace).Get(ctx, *p.Status.ResourceClaimStatuses[0].ResourceClaimName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if claim.Status.Allocation == nil {
		t.Fatalf("pod %s runs, but its claim %s is not allocated", p.Name, claim.Name)
	}
	return claim
}

// waitUnprepared waits until the claim is deleted and its CDI spec and
// region directory are gone from the host.
func waitUnprepared(ctx context.Context, t *testing.T, claim *resourcev1.ResourceClaim) {
	t.Helper()
	spec := filepath.Join(cdiDir, "vgpu.io-gpu_"+string(claim.UID)+".json")
	region := filepath.Join(contract.HostClaimsDir, contract.ClaimDirName(string(claim.UID), dra.RequestName))
	for {
		var left []string
		if _, err := c.Client.ResourceV1().ResourceClaims(claim.Namespace).Get(ctx, claim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			left = append(left, "the claim")
		}
		for _, p := range []string{spec, region, region + contract.HostLimitsSuffix} {
			if _, err := os.Stat(p); err == nil {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("claim %s/%s of a deleted pod: left %v", claim.Namespace, claim.Name, left)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func sliceDevices(ctx context.Context, t *testing.T) int {
	t.Helper()
	slices, err := c.Client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range slices.Items {
		if s.Spec.Driver == dra.Driver && s.Spec.NodeName != nil && *s.Spec.NodeName == c.RealNodeName() {
			n += len(s.Spec.Devices)
		}
	}
	return n
}

func allocatableGPUs(ctx context.Context, t *testing.T) int64 {
	t.Helper()
	n, err := c.Client.CoreV1().Nodes().Get(ctx, c.RealNodeName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := n.Status.Allocatable[corev1.ResourceName(contract.ResourceGPU)]
	return q.Value()
}

// usageRow says whether one line of vgpuctl's table holds every word.
func usageRow(out string, words ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Join(strings.Fields(l), " ")
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(" "+f+" ", " "+w+" ") }) {
			return true
		}
	}
	return false
}

// restartNodeAgent deletes the node agent's pod and waits for the
// DaemonSet's new one to be Ready.
func restartNodeAgent(ctx context.Context, t *testing.T) {
	t.Helper()
	sel := metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vgpu-device-plugin"}
	pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, sel)
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the node agent's pod: %v (%d pods)", err, len(pods.Items))
	}
	old := pods.Items[0]
	if err := c.Client.CoreV1().Pods(namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, sel)
		if err == nil && len(pods.Items) == 1 && pods.Items[0].UID != old.UID && podReady(&pods.Items[0]) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no new node agent pod Ready after deleting %s", old.Name)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
