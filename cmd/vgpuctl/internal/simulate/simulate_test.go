package simulate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/simulate/openb"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/settings"
)

const oneGPU = `
nodes:
- name: solo
  gpus: [{model: T4, memoryMiB: 16000, count: 1}]
`

const fortyPercent = `
apiVersion: v1
kind: Pod
metadata: {name: share}
spec:
  containers:
  - name: c
    resources:
      limits: {nvidia.com/gpucores: "40", nvidia.com/gpumem-percentage: "40"}
`

var binpack = placement.Policies{Node: settings.Binpack, GPU: settings.Binpack}

func mustCluster(t *testing.T, y string) *Cluster {
	t.Helper()
	c, err := ReadClusterYAML("test", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustWorkload(t *testing.T, c *Cluster, y string) *Workload {
	t.Helper()
	w, err := ReadWorkloadYAML("test", []byte(y), medianGPUMemory(c))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestHandChecked: one GPU, pods of 40 %. Demand arrives 40, 80, 120 % (the
// next, 160 %, would pass 130 %); the third pod cannot fit (120 cores).
func TestHandChecked(t *testing.T) {
	c := mustCluster(t, oneGPU)
	w := mustWorkload(t, c, fortyPercent)
	r, err := Replay(c, w, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1, Seed: 7, TargetPercent: 130})
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{40, 40}, {80, 80}, {120, 80}}
	if len(r.Events) != len(want) {
		t.Fatalf("events %+v", r.Events)
	}
	for i, e := range want {
		if math.Abs(r.Events[i].ArrivedPct-e.ArrivedPct) > 1e-9 || math.Abs(r.Events[i].AllocPct-e.AllocPct) > 1e-9 {
			t.Fatalf("event %d = %+v, want %+v", i, r.Events[i], e)
		}
	}
	if r.Submitted != 3 || r.Failed != 1 || r.FailedGPU != 1 || r.FirstFailPct != 120 {
		t.Fatalf("run %+v", r)
	}
	// 80 of the 120 % that arrived was placed.
	if math.Abs(r.PlacedPct-200.0/3) > 1e-9 {
		t.Errorf("placed %v%% of arrived, want 66.7", r.PlacedPct)
	}
	for lv, want := range map[int]float64{40: 40, 80: 80, 100: 80, 120: 80} {
		if got := r.AllocAt(lv); got != want {
			t.Errorf("AllocAt(%d) = %v, want %v", lv, got, want)
		}
	}
	if !math.IsNaN(r.AllocAt(130)) || !math.IsNaN(r.AllocAt(10)) {
		t.Errorf("levels the replay never reached must be NaN: %v %v", r.AllocAt(130), r.AllocAt(10))
	}
	// The GPU is 800 milli used, 200 free: less than the typical 400 share.
	if r.Fragmented != 1 || r.FragmentThreshold != 400 || math.Abs(r.FragmentedFreePct-20) > 1e-9 {
		t.Fatalf("fragmentation %d GPUs, %v%% free, threshold %d", r.Fragmented, r.FragmentedFreePct, r.FragmentThreshold)
	}
}

// TestSplitCountLimitsPacking: 20 % shares on one GPU with split count 3
// stop at 3 pods (60 %), not 5.
func TestSplitCountLimitsPacking(t *testing.T) {
	c := mustCluster(t, oneGPU)
	w := mustWorkload(t, c, strings.ReplaceAll(fortyPercent, `"40"`, `"20"`))
	for split, want := range map[int]float64{3: 60, 10: 100} {
		r, err := Replay(c, w, Options{Policies: binpack, SplitCount: split, MemoryScaling: 1, Seed: 1, TargetPercent: 130})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Events[len(r.Events)-1].AllocPct; math.Abs(got-want) > 1e-9 {
			t.Errorf("split %d: allocated %v%%, want %v%%", split, got, want)
		}
	}
}

func openbInput(t *testing.T, nodes, tasks string) (*Cluster, *Workload) {
	t.Helper()
	return openbWith(t, nodes, "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec", tasks)
}

// openbWith reads nodes and tasks given the task list's header.
func openbWith(t *testing.T, nodes, header, tasks string) (*Cluster, *Workload) {
	t.Helper()
	on, err := openb.ReadNodes(strings.NewReader("sn,cpu_milli,memory_mib,gpu,model\n" + nodes))
	if err != nil {
		t.Fatal(err)
	}
	ot, err := openb.ReadTasks(strings.NewReader(header + "\n" + tasks))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ClusterFromOpenB("n", on, OpenBGPUMemoryMiB)
	if err != nil {
		t.Fatal(err)
	}
	w, err := WorkloadFromOpenB("t", ot)
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

func TestOpenBMapping(t *testing.T) {
	_, w := openbInput(t, "n,1000,1000,1,T4\n", "cpu,4000,1024,0,0,\nwhole,1000,1024,2,1000,\nshare,1000,1024,1,333,V100M32|A10\n")
	if w.Tasks[0].Pod != nil || w.Tasks[0].DemandMilli != 0 {
		t.Fatalf("CPU-only task: %+v", w.Tasks[0])
	}
	if c := w.Tasks[1].Pod.Containers[0]; c.Count != 2 || !c.Exclusive || w.Tasks[1].DemandMilli != 2000 {
		t.Fatalf("whole GPUs: %+v", w.Tasks[1])
	}
	share := w.Tasks[2]
	if c := share.Pod.Containers[0]; c.Cores != 34 || c.MemoryPercent != 34 || c.Exclusive || share.DemandMilli != 333 {
		t.Fatalf("share: %+v %+v", c, share)
	}
	if sel := share.Pod.Selector.UseTypes; strings.Join(sel, ",") != "V100M32,A10" {
		t.Fatalf("gpu_spec not mapped to use-gputype: %v", sel)
	}
}

// TestMultiGPUListWithoutSpec: the multi-GPU openb lists have no gpu_spec
// column; their 4-GPU tasks go whole onto one node.
func TestMultiGPUListWithoutSpec(t *testing.T) {
	dir := t.TempDir()
	nodes, tasks := dir+"/nodes.csv", dir+"/tasks.csv"
	if err := os.WriteFile(nodes, []byte("sn,cpu_milli,memory_mib,gpu,model\na,64000,65536,4,T4\nb,64000,65536,4,T4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tasks, []byte("name,cpu_milli,memory_mib,num_gpu,gpu_milli\nq,1000,1024,4,1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runCommand(t, "--cluster", nodes, "--workload", tasks, "--arrive", "100")
	if !regexp.MustCompile(`» 100\s+100\.0`).MatchString(out) || !regexp.MustCompile(`GPU demand placed, % of arrived\s+100\.0`).MatchString(out) {
		t.Fatalf("two 4-GPU tasks on two 4-GPU nodes must all be placed:\n%s", out)
	}
}

// TestHostResources: two whole-GPU pods needing 2 CPUs each; only one node
// has the CPU, though the GPU score alone prefers neither. One must fail.
func TestHostResources(t *testing.T) {
	c, w := openbInput(t, "a-poor,1000,65536,1,T4\nb-rich,64000,65536,1,T4\n", "whole,2000,1024,1,1000,\n")
	for seed := uint64(1); seed <= 5; seed++ {
		r, err := Replay(c, w, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1, Seed: seed, TargetPercent: 100, CPUWeight: 1})
		if err != nil {
			t.Fatal(err)
		}
		if r.Submitted != 2 || r.FailedGPU != 1 || r.FirstFailPct != 100 {
			t.Fatalf("seed %d: %+v", seed, r)
		}
	}
}

// TestCPUOnlyPodsFollowThePolicy: a CPU-only pod must not take the CPU a
// node's free GPU needs. Nodes a (16 cores) and b (6 cores) have one GPU
// each; seed 2 submits a whole-GPU pod W (6 cores), a CPU-only pod C (5
// cores), then W again. W goes to a (the GPU scores tie; a's name sorts
// first). Ranked by the binpack policy, C goes to a, whose GPU is full,
// and the second W gets b. Ranked by CPU use alone (MostAllocated: 5/6 of
// b against 11/16 of a), C takes b's CPU and the second W fits nowhere.
func TestCPUOnlyPodsFollowThePolicy(t *testing.T) {
	c, w := openbInput(t, "a,16000,65536,1,T4\nb,6000,65536,1,T4\n", "w,6000,0,1,1000,\nc,5000,0,0,0,\n")
	for host, wantFailed := range map[bool]int{false: 0, true: 1} {
		r, err := Replay(c, w, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1, Seed: 2, TargetPercent: 100, HostOnlyCPUPods: host})
		if err != nil {
			t.Fatal(err)
		}
		var arrived []float64
		for _, e := range r.Events {
			arrived = append(arrived, e.ArrivedPct)
		}
		if fmt.Sprint(arrived) != "[50 50 100]" {
			t.Fatalf("seed 2 no longer submits W, C, W: arrived %v", arrived)
		}
		if r.Failed != wantFailed || r.FailedGPU != wantFailed || r.Events[2].AllocPct != 100-50*float64(wantFailed) {
			t.Errorf("host-only ranking %v: failed %d (GPU %d), allocated %v%%; want %d failed", host, r.Failed, r.FailedGPU, r.Events[2].AllocPct, wantFailed)
		}
	}
}

// TestGPUSpec: V100-only shares fill the V100 and then fail, though the
// T4 (whose node name sorts first) stays free.
func TestGPUSpec(t *testing.T) {
	c, w := openbInput(t, "a-t4,64000,65536,1,T4\nb-v100,64000,65536,1,V100M32\n", "v,1000,1024,1,500,V100M32\n")
	r, err := Replay(c, w, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1, Seed: 1, TargetPercent: 75})
	if err != nil {
		t.Fatal(err)
	}
	if r.Submitted != 3 || r.FailedGPU != 1 || r.Events[2].AllocPct != 50 {
		t.Fatalf("%+v", r)
	}
}

// TestNoGPUDemand: a workload of CPU-only pods could never reach the
// target; it is refused instead of looping.
func TestNoGPUDemand(t *testing.T) {
	c, w := openbInput(t, "n,64000,65536,1,T4\n", "cpu,1000,1024,0,0,\n")
	if _, err := Replay(c, w, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1, Seed: 1, TargetPercent: 130}); err == nil || !strings.Contains(err.Error(), "asks for no GPU") {
		t.Fatalf("err = %v", err)
	}
}

func runCommand(t *testing.T, args ...string) string {
	t.Helper()
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"placement"}, args...))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String()
}

func TestBuiltinExample(t *testing.T) {
	out := runCommand(t)
	for _, want := range []string{"built-in example", "4 nodes, 12 GPUs", "binpack/spread", "» 100", "first failure at arrived %", "fragmented GPUs at end"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	all := runCommand(t, "--policy", "all", "--seeds", "3")
	for _, want := range []string{"binpack/binpack", "binpack/spread", "spread/binpack", "spread/spread", "seeds 1..3"} {
		if !strings.Contains(all, want) {
			t.Errorf("--policy all lacks %q:\n%s", want, all)
		}
	}
}

// TestSameSeedSameNumbers runs the JSON output twice per seed.
func TestSameSeedSameNumbers(t *testing.T) {
	decode := func(s string) Report {
		var r Report
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
		for i := range r.Results {
			r.Results[i].WallSeconds = Stat{}
		}
		return r
	}
	a := decode(runCommand(t, "-o", "json", "--policy", "all", "--seed", "5"))
	b := decode(runCommand(t, "-o", "json", "--policy", "all", "--seed", "5"))
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("same seed, different numbers:\n%s\n%s", ja, jb)
	}
	if len(a.Results) != 6 || a.Results[5].Label != "fgd" || a.GPUs != 12 || len(a.Results[0].Curve) != len(Levels) {
		t.Fatalf("report %+v", a)
	}
	c := decode(runCommand(t, "-o", "json", "--policy", "all", "--seed", "6"))
	jc, _ := json.Marshal(c)
	if bytes.Equal(ja, jc) {
		t.Fatal("seeds 5 and 6 gave identical reports: the seed is ignored")
	}
}

func TestBadInput(t *testing.T) {
	cases := map[string][]string{
		`--node-policy: policy "fast"`:                        {"--node-policy", "fast"},
		`--split-count 0: must be from 1`:                     {"--split-count", "0"},
		`--policy "some"`:                                     {"--policy", "some"},
		`--cpu-pods "gpu": must be policy or host`:            {"--cpu-pods", "gpu"},
		`output format "xml", allowed formats are: json,yaml`: {"-o", "xml"},
		`--percentage-of-nodes-to-score 101: must be from 0`:  {"--percentage-of-nodes-to-score", "101"},
		`no such file`:                         {"--cluster", "/nonexistent.yaml"},
		`container "c": nvidia.com/gpucores=0`: {"--workload", writeTemp(t, strings.ReplaceAll(fortyPercent, `nvidia.com/gpucores: "40"`, `nvidia.com/gpucores: "0"`))},
	}
	for want, args := range cases {
		cmd := NewCommand()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append([]string{"placement"}, args...))
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: err = %v, want %q", args, err, want)
		}
	}
}

func writeTemp(t *testing.T, s string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

func TestAdaptivePercent(t *testing.T) {
	// kube-scheduler's default percentageOfNodesToScore.
	for nodes, want := range map[int]int{100: 50, 1000: 42, 1213: 41, 5000: 10, 6000: 5, 100000: 5} {
		if got := AdaptivePercent(nodes); got != want {
			t.Errorf("AdaptivePercent(%d) = %d, want %d", nodes, got, want)
		}
	}
}

func TestSampler(t *testing.T) {
	all := func(int) bool { return true }
	even := func(i int) bool { return i%2 == 0 }
	cases := []struct {
		name           string
		nodes, percent int
		fits           func(int) bool
		want           [][2]int // per search: first index, count
	}{
		{"every node when the setting is 100", 250, 100, all, [][2]int{{0, 250}, {0, 250}}},
		{"every node of a cluster under 100 nodes", 80, 10, all, [][2]int{{0, 80}, {0, 80}}},
		{"at least 100 nodes, each search going on where the last stopped, wrapping", 250, 10, all,
			[][2]int{{0, 100}, {100, 100}, {200, 100}, {50, 100}}},
		{"nodes failing the filters are looked at but not counted", 250, 10, even,
			[][2]int{{0, 100}, {200, 100}}},
		{"a percentage above the floor", 1000, 42, all, [][2]int{{0, 420}, {420, 420}, {840, 420}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSampler(tc.nodes, tc.percent)
			for k, w := range tc.want {
				got := s.sample(tc.fits)
				if len(got) != w[1] || got[0] != w[0] {
					t.Fatalf("search %d: %d nodes from %d, want %d from %d", k, len(got), got[0], w[1], w[0])
				}
				for j := 1; j < len(got); j++ {
					if !tc.fits(got[j]) {
						t.Fatalf("search %d: node %d does not pass the filters", k, got[j])
					}
				}
			}
		})
	}
}

// TestChurn: one GPU; A holds it from 0 to 10; B arrives at 5 and runs
// from 10 (waiting 5 s); C arrives at 6 and gives up at 8, never run.
// Arriving 2.5× as fast, A still leaves at 10 and B arrives at 2, waiting 8 s.
func TestChurn(t *testing.T) {
	c, w := openbWith(t, "n,64000,65536,1,T4\n", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time",
		"a,1000,1024,1,1000,0,10\nb,1000,1024,1,1000,5,20\nc,1000,1024,1,1000,6,8\n")
	for _, pol := range []placement.Policies{binpack, {Node: settings.Fragmentation, GPU: settings.Fragmentation}} {
		r, err := ReplayChurn(c, w, Options{Policies: pol, SplitCount: 10, MemoryScaling: 1}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.Submitted != 3 || r.NeverRan != 1 || r.Waited != 1 || r.MeanWaitSeconds != 5 || math.Abs(r.PlacedPct-200.0/3) > 1e-9 || r.PeakAllocPct != 100 {
			t.Errorf("%v: %+v", pol, r)
		}
	}
	r, err := ReplayChurn(c, w, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1}, 2.5)
	if err != nil {
		t.Fatal(err)
	}
	if r.Waited != 1 || r.MeanWaitSeconds != 8 {
		t.Errorf("compressed: %+v", r)
	}
	_, nw := openbWith(t, "n,64000,65536,1,T4\n", "name,cpu_milli,memory_mib,num_gpu,gpu_milli", "a,1,1,1,1000\n")
	if _, err := ReplayChurn(c, nw, Options{Policies: binpack, SplitCount: 10, MemoryScaling: 1}, 1); err == nil || !strings.Contains(err.Error(), "needs both") {
		t.Errorf("a list without times: err = %v", err)
	}
}

// -o yaml is the JSON report's fields, as YAML.
func TestYAMLIsTheJSONReport(t *testing.T) {
	var fromJSON, fromYAML Report
	if err := json.Unmarshal([]byte(runCommand(t, "-o", "json", "--seed", "5")), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict([]byte(runCommand(t, "-o", "yaml", "--seed", "5")), &fromYAML); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Report{&fromJSON, &fromYAML} {
		for i := range r.Results {
			r.Results[i].WallSeconds = Stat{}
		}
	}
	ja, _ := json.Marshal(fromJSON)
	jb, _ := json.Marshal(fromYAML)
	if !bytes.Equal(ja, jb) || len(fromYAML.Results) == 0 {
		t.Errorf("yaml and json reports differ:\n%s\n%s", ja, jb)
	}
}
