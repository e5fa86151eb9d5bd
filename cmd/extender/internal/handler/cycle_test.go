package handler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/device"
	"github.com/vgpu-io/vgpu/lib/ledger"
	"github.com/vgpu-io/vgpu/lib/settings"
)

// schedulerPod is a fractional pod as kube-scheduler holds it after
// admission and defaulting, managed fields included: what it sends.
func schedulerPod() *corev1.Pod {
	limits := corev1.ResourceList{
		"nvidia.com/gpu":      resource.MustParse("1"),
		"nvidia.com/gpumem":   resource.MustParse("16384"),
		"nvidia.com/gpucores": resource.MustParse("30"),
	}
	grace, toleration := int64(30), int64(300)
	fields := `{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:automountServiceAccountToken":{},"f:containers":{"k:{\"name\":\"work\"}":{".":{},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{".":{},"f:limits":{".":{},"f:nvidia.com/gpu":{},"f:nvidia.com/gpucores":{},"f:nvidia.com/gpumem":{}},"f:requests":{}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{}}}`
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "train-00042", Namespace: "team-a", UID: "6f0c2a9e-1b7d-4c55-9a3e-2d8f4b1c7e90", ResourceVersion: "123456",
			CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)),
			Labels:            map[string]string{"app": "train"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl-client-side-apply", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(fields)}},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "work", Image: "nvidia/cuda:12.4.0-base-ubuntu22.04",
				Resources:                corev1.ResourceRequirements{Limits: limits, Requests: limits},
				TerminationMessagePath:   "/dev/termination-log",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				ImagePullPolicy:          corev1.PullIfNotPresent,
			}},
			RestartPolicy: corev1.RestartPolicyAlways, TerminationGracePeriodSeconds: &grace, DNSPolicy: corev1.DNSClusterFirst,
			SecurityContext: &corev1.PodSecurityContext{}, SchedulerName: "vgpu-scheduler",
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &toleration},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &toleration},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBestEffort},
	}
}

// BenchmarkCycle is the extender's share of one kube-scheduler cycle on
// the sample kube-scheduler sends from 1,000 nodes (420, about 42 %): the
// filter and the prioritize call, decoded and answered over HTTP. A tenth
// of the nodes hold some shares, the rest are empty.
func BenchmarkCycle(b *testing.B) {
	l := ledger.New()
	nodes := make([]string, 420)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%04d", i)
		inv := device.Inventory{SplitCount: 10, MemoryScaling: 1}
		for g := range 8 {
			inv.GPUs = append(inv.GPUs, device.GPU{UUID: fmt.Sprintf("GPU-%d-%d", i, g), Index: g, Model: "NVIDIA A100-SXM4-80GB", MemoryMiB: 81920, Healthy: true})
		}
		l.SetInventory(nodes[i], inv)
		if i%10 == 0 {
			err := l.Reserve(fmt.Sprintf("pod-%d", i), assign.Pod{Node: nodes[i], Containers: []assign.Container{{Name: "c",
				Devices: []assign.Device{{UUID: inv.GPUs[0].UUID, MemoryMiB: int64(1024 * (1 + i%40)), Cores: 20}}}}})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	h, _ := newHandler(b, settings.Default())
	h.Ledger = l
	mux := http.NewServeMux()
	h.Routes(mux)
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: schedulerPod(), NodeNames: &nodes})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, verb := range []string{"/filter", "/prioritize"} {
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, httptest.NewRequest(http.MethodPost, verb, bytes.NewReader(body)))
			if w.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", verb, w.Code, w.Body)
			}
		}
	}
	b.ReportMetric(float64(len(body)), "request-bytes")
}

// TestCodecDecodesAsEncodingJSON guards the switch of JSON library: the
// scheduler's request, pod and all, decodes to the same value as with
// encoding/json (quantities, times and managed fields included).
func TestCodecDecodesAsEncodingJSON(t *testing.T) {
	nodes := []string{"node-a", "node-b"}
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: schedulerPod(), NodeNames: &nodes})
	if err != nil {
		t.Fatal(err)
	}
	var want, got extenderv1.ExtenderArgs
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatal(err)
	}
	if err := codec.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(want, got) {
		t.Errorf("decoded differently:\nencoding/json %+v\njson-iterator %+v", want, got)
	}
	if q := got.Pod.Spec.Containers[0].Resources.Limits["nvidia.com/gpumem"]; q.Value() != 16384 {
		t.Errorf("gpumem %v, want 16384", q.String())
	}
	out, err := codec.Marshal(&extenderv1.ExtenderFilterResult{NodeNames: &nodes, FailedNodes: map[string]string{"node-c": "full"}})
	if err != nil {
		t.Fatal(err)
	}
	std, _ := json.Marshal(&extenderv1.ExtenderFilterResult{NodeNames: &nodes, FailedNodes: map[string]string{"node-c": "full"}})
	if string(out) != string(std) {
		t.Errorf("encoded %s, encoding/json %s", out, std)
	}
}
