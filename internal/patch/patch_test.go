package patch

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/vgpu-io/vgpu/internal/testutil"
)

// Values survive the round trip whatever they hold, including what Go's %q
// quotes differently from JSON (\x7f, \a, invalid UTF-8 becomes U+FFFD).
func TestAnnotationsEncodeAnyValueAsJSON(t *testing.T) {
	for _, v := range []string{`{"gpus":[{"uuid":"GPU-1"}]}`, "a\x7fb", "bell\a", "tab\tand \"quotes\"", "ü €"} {
		var got struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(Annotations(map[string]string{"vgpu.io/x": v}), &got); err != nil {
			t.Fatalf("%q: not JSON: %v", v, err)
		}
		if got.Metadata.Annotations["vgpu.io/x"] != v {
			t.Errorf("%q came back as %q", v, got.Metadata.Annotations["vgpu.io/x"])
		}
	}
}

func TestWritesLeaveTheRestAlone(t *testing.T) {
	ctx := context.Background()
	gpu := corev1.ResourceName("nvidia.com/gpu")
	cs := fake.NewClientset(
		testutil.Pod("p", testutil.Annotations(map[string]string{"keep": "me"})),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{"keep": "me"}},
			Status: corev1.NodeStatus{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}}},
	)
	if err := PodAnnotations(ctx, cs, "ns", "p", map[string]string{"vgpu.io/allocated": "{}"}); err != nil {
		t.Fatal(err)
	}
	if err := NodeAnnotations(ctx, cs, "n", map[string]string{"vgpu.io/devices": "[]"}); err != nil {
		t.Fatal(err)
	}
	if err := NodeResources(ctx, cs, "n", corev1.ResourceList{gpu: resource.MustParse("40")}, corev1.ResourceList{gpu: resource.MustParse("30")}); err != nil {
		t.Fatal(err)
	}
	pod, _ := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	node, _ := cs.CoreV1().Nodes().Get(ctx, "n", metav1.GetOptions{})
	if pod.Annotations["keep"] != "me" || pod.Annotations["vgpu.io/allocated"] != "{}" {
		t.Errorf("pod annotations %v", pod.Annotations)
	}
	if node.Annotations["keep"] != "me" || node.Annotations["vgpu.io/devices"] != "[]" {
		t.Errorf("node annotations %v", node.Annotations)
	}
	c, a, cpu := node.Status.Capacity[gpu], node.Status.Allocatable[gpu], node.Status.Capacity[corev1.ResourceCPU]
	if c.Value() != 40 || a.Value() != 30 || cpu.Value() != 8 {
		t.Errorf("capacity %v allocatable %v cpu %v, want 40, 30 and the cpu kept", c.String(), a.String(), cpu.String())
	}
	if err := PodAnnotations(ctx, cs, "ns", "gone", map[string]string{"a": "b"}); err == nil {
		t.Error("annotating a missing pod succeeded")
	}
}

func TestJSONPatch(t *testing.T) {
	var ops []map[string]any
	if err := json.Unmarshal(JSON(Op{Op: "test", Path: "/webhooks/0/name", Value: "a\x7f"}, Op{Op: "add", Path: "/x", Value: "y"}), &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0]["value"] != "a\x7f" || ops[1]["op"] != "add" {
		t.Errorf("ops %v", ops)
	}
}

// jsonByFormat matches JSON written with fmt, whose %q is Go's quoting.
var jsonByFormat = regexp.MustCompile("Sprintf\\(`[\\s\\[{]*[\\[{]\\s*\"")

// No binary builds a patch, or any JSON, by string formatting.
func TestNoJSONByFormatting(t *testing.T) {
	testutil.Sources(t, filepath.Join("..", ".."), []string{"cmd", "internal"}, []string{".go"}, func(path string, b []byte) {
		if strings.HasSuffix(path, "_test.go") {
			return
		}
		if loc := jsonByFormat.FindIndex(b); loc != nil {
			t.Errorf("%s:%d: JSON built with fmt.Sprintf; use internal/patch or encoding/json", path, 1+strings.Count(string(b[:loc[0]]), "\n"))
		}
	})
}
