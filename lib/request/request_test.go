package request

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vgpu-io/vgpu/lib/settings"
)

// ctr builds a container whose limits are the given name=value pairs.
func ctr(name string, kv ...string) corev1.Container {
	c := corev1.Container{Name: name}
	if len(kv) > 0 {
		c.Resources.Limits = corev1.ResourceList{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		c.Resources.Limits[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return c
}

func pod(ann map[string]string, init []corev1.Container, cs ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Annotations: ann},
		Spec:       corev1.PodSpec{InitContainers: init, Containers: cs},
	}
}

func TestFromPod(t *testing.T) {
	privileged := ctr("priv", "nvidia.com/gpu", "1", "nvidia.com/gpucores", "30")
	yes := true
	privileged.SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	privWhole := ctr("privwhole", "nvidia.com/gpu", "2")
	privWhole.SecurityContext = &corev1.SecurityContext{Privileged: &yes}
	reqDiffers := ctr("c", "nvidia.com/gpucores", "30")
	reqDiffers.Resources.Requests = corev1.ResourceList{"nvidia.com/gpucores": resource.MustParse("40")}
	reqEqual := ctr("c", "nvidia.com/gpucores", "30")
	reqEqual.Resources.Requests = corev1.ResourceList{"nvidia.com/gpucores": resource.MustParse("30")}
	reqOnly := corev1.Container{Name: "c"}
	reqOnly.Resources.Requests = corev1.ResourceList{"nvidia.com/gpumem": resource.MustParse("1000")}

	cases := []struct {
		name    string
		pod     *corev1.Pod
		want    *Pod
		wantErr []string // every substring must appear
		noGPU   bool
	}{
		{name: "no vgpu resources", pod: pod(nil, nil, ctr("app", "cpu", "1")), noGPU: true},
		{name: "gpu zero alone asks for nothing", pod: pod(nil, nil, ctr("app", "nvidia.com/gpu", "0")), noGPU: true},
		{name: "gpu alone is a whole exclusive GPU", pod: pod(nil, nil, ctr("app", "nvidia.com/gpu", "2")),
			want: &Pod{Containers: []Container{{Name: "app", Count: 2, Exclusive: true}}}},
		{name: "gpu defaults to one", pod: pod(nil, nil, ctr("app", "nvidia.com/gpumem", "3000", "nvidia.com/gpucores", "25")),
			want: &Pod{Containers: []Container{{Name: "app", Count: 1, MemoryMiB: 3000, Cores: 25}}}},
		{name: "cores 100 is exclusive", pod: pod(nil, nil, ctr("app", "nvidia.com/gpucores", "100", "nvidia.com/gpumem-percentage", "50")),
			want: &Pod{Containers: []Container{{Name: "app", Count: 1, MemoryPercent: 50, Cores: 100, Exclusive: true}}}},
		{name: "requests equal to limits", pod: pod(nil, nil, reqEqual),
			want: &Pod{Containers: []Container{{Name: "c", Count: 1, Cores: 30}}}},
		{name: "init and app containers, init first",
			pod: pod(nil, []corev1.Container{ctr("setup", "nvidia.com/gpumem", "1000")},
				ctr("a", "nvidia.com/gpumem-percentage", "20"), ctr("sidecar", "cpu", "1"), ctr("b", "nvidia.com/gpu", "1", "nvidia.com/gpucores", "10")),
			want: &Pod{Containers: []Container{
				{Name: "setup", Init: true, Count: 1, MemoryMiB: 1000},
				{Name: "a", Count: 1, MemoryPercent: 20},
				{Name: "b", Count: 1, Cores: 10},
			}}},
		{name: "annotations", pod: pod(map[string]string{
			"nvidia.com/use-gputype": "A100, h100", "nvidia.com/nouse-gputype": "MIG",
			"nvidia.com/use-gpuuuid": "GPU-1", "nvidia.com/nouse-gpuuuid": "GPU-2,GPU-3",
			"vgpu.io/node-scheduler-policy": "Spread", "vgpu.io/gpu-scheduler-policy": "binpack",
		}, nil, ctr("app", "nvidia.com/gpucores", "50")),
			want: &Pod{
				Containers: []Container{{Name: "app", Count: 1, Cores: 50}},
				Selector:   Selector{UseTypes: []string{"A100", "h100"}, NoUseTypes: []string{"MIG"}, UseUUIDs: []string{"GPU-1"}, NoUseUUIDs: []string{"GPU-2", "GPU-3"}},
				NodePolicy: settings.Spread, GPUPolicy: settings.Binpack,
			}},
		{name: "fragmentation policy", pod: pod(map[string]string{"vgpu.io/node-scheduler-policy": "fragmentation"}, nil, ctr("app", "nvidia.com/gpucores", "50")),
			want: &Pod{Containers: []Container{{Name: "app", Count: 1, Cores: 50}}, NodePolicy: settings.Fragmentation}},
		{name: "privileged whole GPUs are fine", pod: pod(nil, nil, privWhole),
			want: &Pod{Containers: []Container{{Name: "privwhole", Count: 2, Exclusive: true}}}},

		{name: "cores too high", pod: pod(nil, nil, ctr("train", "nvidia.com/gpucores", "150")),
			wantErr: []string{`container "train": nvidia.com/gpucores=150: must be an integer from 1 to 100`}},
		{name: "cores zero", pod: pod(nil, nil, ctr("train", "nvidia.com/gpucores", "0")),
			wantErr: []string{`container "train": nvidia.com/gpucores=0: must be an integer from 1 to 100`}},
		{name: "percentage out of range", pod: pod(nil, nil, ctr("x", "nvidia.com/gpumem-percentage", "101")),
			wantErr: []string{`container "x": nvidia.com/gpumem-percentage=101: must be an integer from 1 to 100`}},
		{name: "both memory forms", pod: pod(nil, nil, ctr("x", "nvidia.com/gpumem", "100", "nvidia.com/gpumem-percentage", "10")),
			wantErr: []string{`container "x": nvidia.com/gpumem and nvidia.com/gpumem-percentage are both set: set only one of them`}},
		{name: "fraction", pod: pod(nil, nil, ctr("x", "nvidia.com/gpu", "1.5")),
			wantErr: []string{`container "x": nvidia.com/gpu=1500m: must be an integer from 1 to 128`}},
		{name: "milli memory", pod: pod(nil, nil, ctr("x", "nvidia.com/gpumem", "500m")),
			wantErr: []string{`container "x": nvidia.com/gpumem=500m: must be a whole number of MiB, at least 1`}},
		{name: "gpu zero with a share", pod: pod(nil, nil, ctr("x", "nvidia.com/gpu", "0", "nvidia.com/gpucores", "10")),
			wantErr: []string{`container "x": nvidia.com/gpu=0: must be an integer from 1 to 128`}},
		{name: "requests differ", pod: pod(nil, nil, reqDiffers),
			wantErr: []string{`container "c": nvidia.com/gpucores: requests 40 differ from limits 30: they must be equal`}},
		{name: "requests only", pod: pod(nil, nil, reqOnly),
			wantErr: []string{`container "c": nvidia.com/gpumem is set in requests only`}},
		{name: "privileged share", pod: pod(nil, nil, privileged),
			wantErr: []string{`container "priv": privileged containers see every GPU`}},
		{name: "bad policy annotation", pod: pod(map[string]string{"vgpu.io/gpu-scheduler-policy": "random"}, nil, ctr("x", "nvidia.com/gpu", "1")),
			wantErr: []string{`annotation vgpu.io/gpu-scheduler-policy: policy "random": must be "binpack", "spread" or "fragmentation"`}},
		{name: "empty selector annotation", pod: pod(map[string]string{"nvidia.com/use-gputype": " , "}, nil, ctr("x", "nvidia.com/gpu", "1")),
			wantErr: []string{`annotation nvidia.com/use-gputype=" , ": must be a comma-separated list`}},
		{name: "all errors of the pod are reported",
			pod: pod(map[string]string{"vgpu.io/node-scheduler-policy": "fast"},
				[]corev1.Container{ctr("init", "nvidia.com/gpucores", "0")},
				ctr("a", "nvidia.com/gpumem-percentage", "0"), ctr("b", "nvidia.com/gpu", "-1")),
			wantErr: []string{
				`init container "init": nvidia.com/gpucores=0`,
				`container "a": nvidia.com/gpumem-percentage=0`,
				`container "b": nvidia.com/gpu=-1`,
				`annotation vgpu.io/node-scheduler-policy`,
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromPod(tc.pod)
			switch {
			case tc.noGPU:
				if !errors.Is(err, ErrNoGPU) {
					t.Fatalf("err = %v, want ErrNoGPU", err)
				}
			case len(tc.wantErr) > 0:
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				if errors.Is(err, ErrNoGPU) {
					t.Fatalf("invalid pod reported as no-GPU: %v", err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got  %+v\nwant %+v", got, tc.want)
				}
			}
		})
	}
}

func TestCheckMemoryFits(t *testing.T) {
	p := &Pod{Containers: []Container{{Name: "small", Count: 1, MemoryMiB: 8000}, {Name: "big", Count: 1, MemoryMiB: 90000}, {Name: "pct", Count: 1, MemoryPercent: 100}}}
	err := CheckMemoryFits(p, 81920)
	if err == nil || err.Error() != `container "big": nvidia.com/gpumem=90000: must be at most 81920, the memory of the largest GPU in the cluster` {
		t.Fatalf("err = %v", err)
	}
	if err := CheckMemoryFits(p, 90000); err != nil {
		t.Fatalf("fits exactly, got %v", err)
	}
}

func TestMemoryOn(t *testing.T) {
	cases := []struct {
		c    Container
		gpu  int64
		want int64
	}{
		{Container{MemoryMiB: 3000}, 16384, 3000},
		{Container{MemoryPercent: 25}, 16384, 4096},
		{Container{MemoryPercent: 25}, 81920, 20480},
		{Container{MemoryPercent: 1}, 50, 1},
		{Container{}, 24576, 24576},
	}
	for _, tc := range cases {
		if got := tc.c.MemoryOn(tc.gpu); got != tc.want {
			t.Errorf("%+v on %d MiB = %d, want %d", tc.c, tc.gpu, got, tc.want)
		}
	}
}

func TestSelectorAllows(t *testing.T) {
	cases := []struct {
		sel   Selector
		model string
		uuid  string
		want  bool
	}{
		{Selector{}, "Tesla T4", "GPU-a", true},
		{Selector{UseTypes: []string{"a100"}}, "NVIDIA A100-SXM4-80GB", "GPU-a", true},
		{Selector{UseTypes: []string{"a100"}}, "Tesla T4", "GPU-a", false},
		{Selector{NoUseTypes: []string{"T4"}}, "Tesla T4", "GPU-a", false},
		{Selector{UseUUIDs: []string{"gpu-A"}}, "Tesla T4", "GPU-a", true},
		{Selector{UseUUIDs: []string{"GPU-b"}}, "Tesla T4", "GPU-a", false},
		{Selector{NoUseUUIDs: []string{"GPU-a"}}, "Tesla T4", "GPU-a", false},
	}
	for _, tc := range cases {
		if got := tc.sel.Allows(tc.model, tc.uuid); got != tc.want {
			t.Errorf("%+v allows %s/%s = %v, want %v", tc.sel, tc.model, tc.uuid, got, tc.want)
		}
	}
}

// TestSidecarsRunBesideTheApp: a restartable init container asking for a
// vGPU is marked a sidecar, and the pod's nvidia.com/gpu counts it beside
// the app containers and every init container declared after it.
func TestSidecarsRunBesideTheApp(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	side := func(name string, kv ...string) corev1.Container {
		c := ctr(name, kv...)
		c.RestartPolicy = &always
		return c
	}
	cases := []struct {
		name     string
		init     []corev1.Container
		app      []corev1.Container
		sidecars []string
		vgpus    int
	}{
		{name: "sidecar plus app is their sum",
			init: []corev1.Container{side("s", "nvidia.com/gpu", "1", "nvidia.com/gpumem", "3000")},
			app:  []corev1.Container{ctr("a", "nvidia.com/gpu", "1", "nvidia.com/gpumem", "4000")}, sidecars: []string{"s"}, vgpus: 2},
		{name: "an init container counts the sidecars before it",
			init: []corev1.Container{side("s", "nvidia.com/gpu", "2", "nvidia.com/gpumem", "1"), ctr("i", "nvidia.com/gpu", "3", "nvidia.com/gpumem", "1")},
			app:  []corev1.Container{ctr("a", "nvidia.com/gpu", "1", "nvidia.com/gpumem", "1")}, sidecars: []string{"s"}, vgpus: 5},
		{name: "an init container does not count the sidecars after it",
			init: []corev1.Container{ctr("i", "nvidia.com/gpu", "3", "nvidia.com/gpumem", "1"), side("s", "nvidia.com/gpu", "2", "nvidia.com/gpumem", "1")},
			app:  []corev1.Container{ctr("a", "nvidia.com/gpu", "1", "nvidia.com/gpumem", "1")}, sidecars: []string{"s"}, vgpus: 3},
		{name: "ordinary init containers take the max",
			init: []corev1.Container{ctr("i1", "nvidia.com/gpu", "2", "nvidia.com/gpumem", "1"), ctr("i2", "nvidia.com/gpu", "2", "nvidia.com/gpumem", "1")},
			app:  []corev1.Container{ctr("a", "nvidia.com/gpu", "1", "nvidia.com/gpumem", "1")}, vgpus: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := FromPod(pod(nil, tc.init, tc.app...))
			if err != nil {
				t.Fatal(err)
			}
			var sidecars []string
			for _, c := range p.Containers {
				if c.Sidecar {
					if !c.Init || !c.RunsWithApp() {
						t.Errorf("sidecar %q: Init %v, RunsWithApp %v; want both", c.Name, c.Init, c.RunsWithApp())
					}
					sidecars = append(sidecars, c.Name)
				}
			}
			if !reflect.DeepEqual(sidecars, tc.sidecars) {
				t.Errorf("sidecars %v, want %v", sidecars, tc.sidecars)
			}
			if got := p.VGPUs(); got != tc.vgpus {
				t.Errorf("VGPUs = %d, want %d", got, tc.vgpus)
			}
		})
	}
}
