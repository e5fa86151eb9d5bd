package dra

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/region"
	"github.com/vgpu-io/vgpu/lib/request"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// What kube-scheduler really allocated, prepared the way the kubelet asks
// for it: over the node agent's DRA socket, the node agent reading the
// claim from the API server. The CDI spec carries the limits the claim
// consumed on the GPU it was given (docs/contract.md#on-the-dra-path), and
// unprepare takes it away.
func TestNodeAgentPreparesWhatTheSchedulerAllocated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := draCluster(ctx, t, split)
	n, err := gpunode.Node(gpunode.Spec{Prefix: "prep", GPUs: gpusPerNode, NoInventory: true}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := daemons.StartNodeAgent(ctx, c, n.Name, gpunode.MockFlag(gpunode.A100_80GB, gpusPerNode), "--mode=dra"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitForNodesReady(ctx, n.Name); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	published := waitSlices(ctx, t, c, 1, gpusPerNode)
	uuidOf := map[string]string{}
	for _, d := range published[0].Spec.Devices {
		uuidOf[d.Name] = *d.Attributes["uuid"].StringValue
	}
	if err := createTemplatePod(ctx, c, "p-two", request.Container{Name: "cuda", Count: 2, MemoryMiB: 3000, Cores: 20}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitForPods(ctx, ns, "app=dra", 1, cluster.PodBound); err != nil {
		t.Fatal(err)
	}
	claim := claimOf(ctx, t, c, "p-two")
	var wantUUIDs []string
	for _, r := range claim.Status.Allocation.Devices.Results {
		wantUUIDs = append(wantUUIDs, uuidOf[r.Device])
	}

	conn, err := grpc.NewClient("unix://"+daemons.NodeAgentDRASocket(c, n.Name), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kubelet := drapb.NewDRAPluginClient(conn)
	ref := []*drapb.Claim{{Namespace: ns, Name: claim.Name, Uid: string(claim.UID)}}
	resp, err := kubelet.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: ref})
	if err != nil {
		t.Fatal(err)
	}
	got := resp.Claims[string(claim.UID)]
	if got == nil || got.Error != "" || len(got.Devices) != 2 {
		t.Fatalf("prepare: %+v", got)
	}
	specPath := filepath.Join(daemons.NodeAgentCDIDir(c, n.Name), "vgpu.io-gpu_"+string(claim.UID)+".json")
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Devices []struct {
			Name           string
			ContainerEdits struct{ Env []string } `json:"containerEdits"`
		}
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	if len(spec.Devices) != 1 {
		t.Fatalf("CDI spec %s", raw)
	}
	env := spec.Devices[0].ContainerEdits.Env
	for _, want := range []string{
		contract.EnvVisibleDevices + "=" + strings.Join(wantUUIDs, ","),
		contract.EnvMemoryLimits + "=3000,3000",
		contract.EnvCoreLimits + "=20,20",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("CDI env %v lacks %s", env, want)
		}
	}
	un, err := kubelet.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: ref})
	if err != nil || un.Claims[string(claim.UID)].GetError() != "" {
		t.Fatalf("unprepare: %v %+v", err, un)
	}
	if _, err := os.Stat(specPath); !os.IsNotExist(err) {
		t.Errorf("CDI spec still there after unprepare (%v)", err)
	}
	t.Run("the monitor audits the claim's container", func(t *testing.T) {
		monitorAuditsClaimContainer(ctx, t, c, n.Name, string(claim.UID), wantUUIDs)
	})
}

// monitorAuditsClaimContainer runs the real monitor in DRA mode for the
// node of pod p-two, whose container "cuda" runs under a claim: with no
// region for the claim it reports the container unenforced (no-region);
// once the claim's region says libvgpu cannot enforce, it reports that
// verdict for the container (docs/dra.md#seeing-what-is-booked).
func monitorAuditsClaimContainer(ctx context.Context, t *testing.T, c *cluster.Cluster, node, claimUID string, uuids []string) {
	if _, err := c.WaitForPods(ctx, ns, "app=dra", 1, cluster.PodRunning); err != nil {
		t.Fatal(err)
	}
	bin, err := daemons.Binary("monitor")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	args := []string{"--kubeconfig", c.Kubeconfig, "--node-name", node, "--mode", "dra", "--host-root", root, "--proc-root", filepath.Join(root, "proc"),
		"--nvml", gpunode.MockFlag(gpunode.A100_80GB, gpusPerNode), "--metrics-address", addr,
		"--region-grace", "1s", "--audit-interval", "200ms", "--audit-confirm", "0s"}
	if err := c.StartProcess(ctx, "monitor", bin, args, cluster.HTTPReady("http://"+addr+"/readyz")); err != nil {
		t.Fatalf("monitor: %v (log %s)", err, c.LogPath("monitor"))
	}
	defer c.StopProcess("monitor")
	unenforced := func(reason string) bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "vgpu_container_unenforced_info{") && strings.Contains(line, `pod="p-two"`) &&
				strings.Contains(line, `container="cuda"`) && strings.Contains(line, fmt.Sprintf("reason=%q", reason)) {
				return true
			}
		}
		return false
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				resp, _ := http.Get("http://" + addr + "/metrics")
				b, _ := io.ReadAll(resp.Body)
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "unenforced") || strings.Contains(l, "regions") || strings.Contains(l, "enforced") {
						t.Log(l)
					}
				}
				t.Fatalf("not %s after 30s (monitor log %s)", what, c.LogPath("monitor"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("reported no-region", func() bool { return unenforced("no-region") })
	r := region.Region{Header: region.Header{Magic: region.Magic, Version: region.Version, DeviceCount: uint32(len(uuids)),
		Flags: region.FlagUnenforced, Reason: region.ReasonBadEnv, ReasonText: "limits file: VGPU_MEMORY_LIMITS_MIB: not a number"}}
	for i, u := range uuids {
		r.Devices[i] = region.Device{UUID: u, MemLimit: 3000 << 20}
	}
	dir := filepath.Join(root, "claims", contract.ClaimDirName(claimUID, dra.RequestName))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, contract.RegionFileName), r.Encode(), 0o666); err != nil {
		t.Fatal(err)
	}
	// The metrics read the region at once; the audit withdraws no-region
	// on its next pass.
	waitFor("reported libvgpu's verdict from the claim's region, and no longer no-region",
		func() bool { return unenforced("bad-env") && !unenforced("no-region") })
}
