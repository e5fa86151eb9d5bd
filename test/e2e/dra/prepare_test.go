package dra

import (
	"context"
	"encoding/json"
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
}
