package annotation

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/device"
)

func sampleInventory() device.Inventory {
	return device.Inventory{
		SplitCount:    10,
		MemoryScaling: 1,
		GPUs: []device.GPU{
			{UUID: "GPU-a", Index: 0, Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, NUMANode: 0, Healthy: true},
			{UUID: "GPU-b", Index: 1, Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, NUMANode: 1, Healthy: false},
		},
	}
}

func sampleAssignment() assign.Pod {
	return assign.Pod{
		Node: "node-1",
		Containers: []assign.Container{
			{Name: "init", Init: true, Devices: []assign.Device{{UUID: "GPU-a", MemoryMiB: 1024, Cores: 10}}},
			{Name: "side", Init: true, Sidecar: true, Devices: []assign.Device{{UUID: "GPU-b", MemoryMiB: 512, Cores: 5}}},
			{Name: "main", Devices: []assign.Device{{UUID: "GPU-a", MemoryMiB: 4096, Cores: 30}, {UUID: "GPU-b", MemoryMiB: 4096, Cores: 30}}},
		},
	}
}

func TestDevicesRoundTrip(t *testing.T) {
	in := sampleInventory()
	s, err := EncodeDevices(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s, `"version":"v1"`) {
		t.Fatalf("encoded value carries no version: %s", s)
	}
	out, err := DecodeDevices(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed the inventory:\n in: %+v\nout: %+v", in, out)
	}
}

func TestAssignmentRoundTrip(t *testing.T) {
	in := sampleAssignment()
	s, err := EncodeAssignment(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeAssignment(s)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed the assignment:\n in: %+v\nout: %+v", in, out)
	}
	c, ok := out.Container("main", false)
	if !ok || len(c.Devices) != 2 {
		t.Fatalf("Container(main) = %+v, %v", c, ok)
	}
	if _, ok := out.Container("main", true); ok {
		t.Fatal("Container(main, init) found an app container")
	}
	if side, ok := out.Container("side", true); !ok || !side.Sidecar || !side.RunsWithApp() {
		t.Fatalf("Container(side) = %+v, %v; want a sidecar", side, ok)
	}
	if init, _ := out.Container("init", true); init.Sidecar || init.RunsWithApp() || strings.Count(s, `"sidecar"`) != 1 {
		t.Fatalf("only the sidecar may carry the sidecar field: %+v in %s", init, s)
	}
}

// TestDecodePodAssignmentMarksSidecarsFromTheSpec: an assignment written
// before the sidecar field books the pod's restartable init containers as
// sidecars all the same, read with the pod's spec.
func TestDecodePodAssignmentMarksSidecarsFromTheSpec(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{}
	p.Annotations = map[string]string{contract.AnnotationAssignment: `{"version":"v1","node":"n","containers":[` +
		`{"name":"setup","init":true,"devices":[{"uuid":"a","memoryMiB":1,"cores":0}]},` +
		`{"name":"proxy","init":true,"devices":[{"uuid":"a","memoryMiB":1,"cores":0}]},` +
		`{"name":"main","devices":[{"uuid":"a","memoryMiB":1,"cores":0}]}]}`}
	p.Spec.InitContainers = []corev1.Container{{Name: "setup"}, {Name: "proxy", RestartPolicy: &always}}
	p.Spec.Containers = []corev1.Container{{Name: "main"}}
	a, err := DecodePodAssignment(p)
	if err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, c := range a.Containers {
		got = append(got, c.Sidecar)
	}
	if !reflect.DeepEqual(got, []bool{false, true, false}) {
		t.Fatalf("sidecar flags %v, want only proxy's set", got)
	}
	if _, err := DecodePodAssignment(&corev1.Pod{}); !errors.Is(err, ErrMissing) {
		t.Fatalf("pod without the annotation: %v, want ErrMissing", err)
	}
}

// TestAssignmentWithoutSidecarField: annotations written before sidecars
// were marked still parse, their init containers as ordinary ones.
func TestAssignmentWithoutSidecarField(t *testing.T) {
	out, err := DecodeAssignment(`{"version":"v1","node":"n","containers":[{"name":"s","init":true,"devices":[{"uuid":"a","memoryMiB":1,"cores":0}]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if c := out.Containers[0]; !c.Init || c.Sidecar {
		t.Fatalf("got %+v, want an ordinary init container", c)
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name, value, want string
		assignment        bool
	}{
		{"empty devices", "", "annotation missing", false},
		{"not json", "{", "vgpu.io/devices: malformed JSON", false},
		{"no version", `{"gpus":[]}`, "no version field", false},
		{"future version", `{"version":"v9","gpus":[]}`, `unknown version "v9"`, false},
		{"wrong type", `{"version":"v1","splitCount":"ten"}`, "malformed v1 value", false},
		{"zero split", `{"version":"v1","splitCount":0,"memoryScaling":1,"gpus":[]}`, "splitCount 0", false},
		{"dup uuid", `{"version":"v1","splitCount":10,"memoryScaling":1,"gpus":[{"uuid":"a","memoryMiB":1},{"uuid":"a","memoryMiB":1}]}`, `duplicate uuid "a"`, false},
		{"empty assignment", "", "vgpu.io/assignment: annotation missing", true},
		{"assignment array", `[]`, "vgpu.io/assignment: malformed JSON", true},
		{"assignment no node", `{"version":"v1","containers":[]}`, "node is empty", true},
		{"cores over 100", `{"version":"v1","node":"n","containers":[{"name":"c","devices":[{"uuid":"a","memoryMiB":1,"cores":101}]}]}`, "cores 101", true},
		{"sidecar not init", `{"version":"v1","node":"n","containers":[{"name":"c","sidecar":true,"devices":[]}]}`, "sidecar is true but init is not", true},
		{"same gpu twice", `{"version":"v1","node":"n","containers":[{"name":"c","devices":[{"uuid":"a","memoryMiB":1},{"uuid":"a","memoryMiB":1}]}]}`, "given twice", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.assignment {
				_, err = DecodeAssignment(tc.value)
			} else {
				_, err = DecodeDevices(tc.value)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	inv := sampleInventory()
	inv.SplitCount = 0
	if _, err := EncodeDevices(inv); err == nil {
		t.Fatal("EncodeDevices accepted split count 0")
	}
	p := sampleAssignment()
	p.Node = ""
	if _, err := EncodeAssignment(p); err == nil {
		t.Fatal("EncodeAssignment accepted an empty node")
	}
}

// The decoders take input from the API server, which anyone with pod patch
// rights can write: they must never panic, and what they accept must survive
// a round trip unchanged.
func FuzzDecodeDevices(f *testing.F) {
	s, _ := EncodeDevices(sampleInventory())
	f.Add(s)
	f.Add(`{"version":"v1"}`)
	f.Add(`{"version":"v2","gpus":null}`)
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := DecodeDevices(s)
		if err != nil {
			return
		}
		again, err := EncodeDevices(inv)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		back, err := DecodeDevices(again)
		if err != nil || !reflect.DeepEqual(inv, back) {
			t.Fatalf("round trip differs: %v", err)
		}
	})
}

func FuzzDecodeAssignment(f *testing.F) {
	s, _ := EncodeAssignment(sampleAssignment())
	f.Add(s)
	f.Add(`{"version":"v1","node":"n","containers":[{"name":"c","devices":[]}]}`)
	f.Add(`{"version":1}`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := DecodeAssignment(s)
		if err != nil {
			return
		}
		again, err := EncodeAssignment(p)
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		back, err := DecodeAssignment(again)
		if err != nil || !reflect.DeepEqual(p, back) {
			t.Fatalf("round trip differs: %v", err)
		}
	})
}
