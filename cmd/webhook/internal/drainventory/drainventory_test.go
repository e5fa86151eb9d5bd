package drainventory

import (
	"context"
	"testing"
	"time"

	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/dra"
	"github.com/vgpu-io/vgpu/lib/settings"
)

func slice(name, model string, mib int64) *resourcev1.ResourceSlice {
	devs, _ := dra.Devices([]device.GPU{{UUID: name, Model: model, MemoryMiB: mib, Healthy: true}}, settings.Default())
	return &resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: resourcev1.ResourceSliceSpec{Driver: dra.Driver, Devices: devs}}
}

func TestSlicesFollowPublishedModels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := fake.NewClientset(slice("n1", "A100", 40960))
	s, f, err := New(cs)
	if err != nil {
		t.Fatal(err)
	}
	f.Start(ctx.Done())
	for ctx.Err() == nil && len(s.Models()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if m, ok := s.LargestGPU(); !ok || m != 40960 || len(s.Models()) != 1 || !s.HasSynced() {
		t.Fatalf("largest %d %v models %v", m, ok, s.Models())
	}
	if _, err := cs.ResourceV1().ResourceSlices().Create(ctx, slice("n2", "H100", 81559), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		if m, _ := s.LargestGPU(); m == 81559 && len(s.Models()) == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m, _ := s.LargestGPU(); m != 81559 || len(s.Models()) != 2 {
		t.Fatalf("after a new node: largest %d models %v", m, s.Models())
	}
}

func TestEnsureToleratesExisting(t *testing.T) {
	cs := fake.NewClientset()
	tp := Templates{Client: cs}
	for range 2 {
		if err := tp.Ensure(context.Background(), "team", "vgpu-1", resourcev1.ResourceClaimSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.ResourceV1().ResourceClaimTemplates("team").Get(context.Background(), "vgpu-1", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}
