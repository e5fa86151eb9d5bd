// Package testutil is what vgpu's tests share to build objects and compare
// output: one pod builder and one golden-file helper, so that a change of
// shape (a new required field, a new annotation) is made once. Only tests
// import it.
package testutil

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/assign"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// PodOption shapes a pod built by Pod.
type PodOption func(*corev1.Pod)

// Pod returns a pod called name in namespace "ns" with the UID "uid-<name>",
// shaped by opts in order.
func Pod(name string, opts ...PodOption) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Namespace sets the namespace.
func Namespace(ns string) PodOption { return func(p *corev1.Pod) { p.Namespace = ns } }

// UID sets the UID.
func UID(uid string) PodOption { return func(p *corev1.Pod) { p.UID = types.UID(uid) } }

// Annotations adds annotations.
func Annotations(kv map[string]string) PodOption {
	return func(p *corev1.Pod) {
		if len(kv) == 0 {
			return
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		for k, v := range kv {
			p.Annotations[k] = v
		}
	}
}

// Labels adds labels.
func Labels(kv map[string]string) PodOption {
	return func(p *corev1.Pod) {
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		for k, v := range kv {
			p.Labels[k] = v
		}
	}
}

// Scheduler sets spec.schedulerName.
func Scheduler(name string) PodOption { return func(p *corev1.Pod) { p.Spec.SchedulerName = name } }

// Node sets spec.nodeName, as a bound pod has it.
func Node(name string) PodOption { return func(p *corev1.Pod) { p.Spec.NodeName = name } }

// Phase sets status.phase.
func Phase(phase corev1.PodPhase) PodOption { return func(p *corev1.Pod) { p.Status.Phase = phase } }

// Created sets the creation timestamp.
func Created(t time.Time) PodOption {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(t) }
}

// Image is the image of every container Pod adds: the API server wants
// one, and no test pulls it (the real-node tests bring their own).
const Image = "cuda"

// Container appends a container with the given limits, as resource
// name/quantity pairs ("nvidia.com/gpumem", "8000", ...).
func Container(name string, limits ...string) PodOption {
	return func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, container(name, limits)) }
}

// InitContainer appends an init container with the given limits.
func InitContainer(name string, limits ...string) PodOption {
	return func(p *corev1.Pod) { p.Spec.InitContainers = append(p.Spec.InitContainers, container(name, limits)) }
}

// Sidecar appends a restartable init container (restartPolicy Always),
// which runs beside the app containers, with the given limits.
func Sidecar(name string, limits ...string) PodOption {
	return func(p *corev1.Pod) {
		c := container(name, limits)
		always := corev1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
	}
}

// Overhead sets the pod's overhead (what its runtime class adds), as
// resource name/quantity pairs.
func Overhead(kv ...string) PodOption {
	return func(p *corev1.Pod) { p.Spec.Overhead = Limits(kv...) }
}

func container(name string, limits []string) corev1.Container {
	return corev1.Container{Name: name, Image: Image, Resources: corev1.ResourceRequirements{Limits: Limits(limits...)}}
}

// Requests sets the requests of the (init) container called name, added
// before, as name/quantity pairs; it panics when there is none.
func Requests(name string, kv ...string) PodOption {
	return func(p *corev1.Pod) { named(p, name).Resources.Requests = Limits(kv...) }
}

// Claim gives the container called name the pod's resource claim podClaim,
// which is the ResourceClaim claimName (docs/dra.md).
func Claim(name, podClaim, claimName string) PodOption {
	return usesClaim(name, corev1.PodResourceClaim{Name: podClaim, ResourceClaimName: &claimName})
}

// ClaimTemplate gives the container called name the pod's resource claim
// podClaim, made from the ResourceClaimTemplate template (as the webhook
// writes it in DRA mode, docs/dra.md).
func ClaimTemplate(name, podClaim, template string) PodOption {
	return usesClaim(name, corev1.PodResourceClaim{Name: podClaim, ResourceClaimTemplateName: &template})
}

func usesClaim(name string, pc corev1.PodResourceClaim) PodOption {
	return func(p *corev1.Pod) {
		c := named(p, name)
		c.Resources.Claims = append(c.Resources.Claims, corev1.ResourceClaim{Name: pc.Name})
		p.Spec.ResourceClaims = append(p.Spec.ResourceClaims, pc)
	}
}

func named(p *corev1.Pod, name string) *corev1.Container {
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	panic("testutil: pod " + p.Name + " has no container " + name)
}

// Assigned binds the pod as the extender does (docs/contract.md): on
// a.Node, with a as its assignment annotation. It panics on an assignment
// that does not encode, a mistake in the test itself.
func Assigned(a assign.Pod) PodOption {
	v, err := annotation.EncodeAssignment(a)
	if err != nil {
		panic(err)
	}
	return func(p *corev1.Pod) {
		p.Spec.NodeName = a.Node
		Annotations(map[string]string{contract.AnnotationAssignment: v})(p)
	}
}

// AskingFor appends, for each of a's containers, the (init or sidecar) container that
// asks for its GPUs: nvidia.com/gpu as many as a gives it, the request a
// answers.
func AskingFor(a assign.Pod) PodOption {
	return func(p *corev1.Pod) {
		for _, c := range a.Containers {
			add := Container
			if c.Sidecar {
				add = Sidecar
			} else if c.Init {
				add = InitContainer
			}
			add(c.Name, contract.ResourceGPU, strconv.Itoa(len(c.Devices)))(p)
		}
	}
}

// Limits is a resource list from name/quantity pairs; it panics on an odd
// count or a bad quantity, which are mistakes in the test itself.
func Limits(kv ...string) corev1.ResourceList {
	if len(kv)%2 != 0 {
		panic("testutil.Limits: odd number of arguments")
	}
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

var update = flag.Bool("update", false, "rewrite testdata/*.golden (and other recorded outputs) with what the code gives now")

// Update reports whether -update was given: recorded outputs are rewritten.
func Update() bool { return *update }

// Golden compares got with testdata/<name>.golden, or rewrites the file
// under -update.
func Golden(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// Eventually polls cond until it holds, failing the test with what when it
// still does not after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
