package simulate

import (
	"embed"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/simulate/openb"
	"github.com/vgpu-io/vgpu/lib/placement"
	"github.com/vgpu-io/vgpu/lib/settings"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/cli"
)

//go:embed example/cluster.yaml example/workload.yaml
var example embed.FS

// NewCommand returns `simulate`, with `simulate placement` under it.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Simulate vgpu scheduling offline",
	}
	cmd.AddCommand(newPlacement())
	return cmd
}

type flags struct {
	cluster, workload     string
	nodePolicy, gpuPolicy string
	policy                string
	splitCount            int
	memoryScaling         float64
	seed                  uint64
	seeds                 int
	output                cli.Output
	arrive                float64
	cpuWeight             float64
	cpuPods               string
	sample                int
}

func newPlacement() *cobra.Command {
	def := settings.Default()
	f := flags{}
	cmd := &cobra.Command{
		Use:   "placement",
		Short: "Replay a workload against a cluster with vgpu's placement code",
		Long: `Replay a workload against a cluster with the placement code the extender runs
(lib/placement), and report how much GPU capacity gets allocated as demand arrives.

The method is the one of the openb trace's paper ("Beware of Fragmentation",
ATC'23): the tasks are shuffled with the seed, then drawn again at random (with
replacement) until the GPU demand would pass --arrive % (130) of the cluster's
GPUs. Pods are placed one at a time and never leave; one that fits nowhere is
dropped. Each GPU counts 1000 milli; a share of a GPU counts its fraction.
A node must fit the pod's CPU and memory requests too. Nodes are ranked as
kube-scheduler ranks them with the vgpu extender: vgpu's GPU score (the
extender's, from lib/placement) plus --cpu-weight times the CPU/memory score of
its NodeResourcesFit plugin under the same policy (MostAllocated for binpack,
LeastAllocated for spread). CPU-only pods are ranked the same way (their GPU
score is the node's as it stands, so binpack sends them where the GPUs are
full), as the paper's policies rank every pod; --cpu-pods host ranks them by
the CPU/memory score alone.

Inputs: --cluster is a YAML cluster (see example/cluster.yaml) or the openb
node list CSV; --workload is a YAML stream of Pods (annotation
simulate.vgpu.io/replicas repeats one) or an openb task CSV. With neither,
a small built-in example runs. openb GPU memory: P100, T4, V100M16 16 GiB,
V100M32 32 GiB, A10 24 GiB, and (undisclosed) G2 24 GiB, G3 32 GiB.

openb shares go as low as 5 %: use --split-count 20 or more for numbers
comparable with the paper's.`,
		Example: `  vgpuctl simulate placement
  vgpuctl simulate placement --policy all \
    --cluster ../shared/traces/openb/openb_node_list_gpu_node.csv \
    --workload ../shared/traces/openb/openb_pod_list_default.csv \
    --split-count 20 --seeds 10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "cluster: YAML file or openb node list (.csv); default: the built-in example")
	fl.StringVar(&f.workload, "workload", "", "workload: YAML Pod stream or openb task list (.csv); default: the built-in example")
	fl.StringVar(&f.nodePolicy, "node-policy", string(def.NodeSchedulerPolicy), "node scheduler policy: binpack or spread")
	fl.StringVar(&f.gpuPolicy, "gpu-policy", string(def.GPUSchedulerPolicy), "GPU scheduler policy: binpack or spread")
	fl.StringVar(&f.policy, "policy", "", `"all" compares the four node/GPU policy pairs side by side (overrides --node-policy and --gpu-policy)`)
	fl.IntVar(&f.splitCount, "split-count", def.DeviceSplitCount, "deviceSplitCount: most vGPUs on one GPU")
	fl.Float64Var(&f.memoryScaling, "memory-scaling", def.DeviceMemoryScaling, "deviceMemoryScaling: >1 overcommits GPU memory")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed of the first replay")
	fl.IntVar(&f.seeds, "seeds", 1, "number of replays, seeds seed..seed+N-1, averaged")
	f.output.AddFlag(fl)
	fl.Float64Var(&f.arrive, "arrive", 130, "stop when the GPU demand would pass this % of capacity")
	fl.Float64Var(&f.cpuWeight, "cpu-weight", 1, "weight of kube-scheduler's CPU/memory score (NodeResourcesFit) beside vgpu's GPU score; 0 = GPU score alone")
	fl.StringVar(&f.cpuPods, "cpu-pods", cpuPodsPolicy, `how CPU-only pods are ranked: "policy" (like GPU pods: vgpu's GPU score of the node as it stands, plus --cpu-weight × the CPU/memory score; the paper's method) or "host" (the CPU/memory score alone, blind to GPUs, as kube-scheduler ranks pods that vgpu's extender never sees)`)
	fl.IntVar(&f.sample, "percentage-of-nodes-to-score", 100, "kube-scheduler's setting of that name: each pod is ranked only among the nodes it would hand the extender, the first that pass its own filters from where the previous pod's search stopped, this % of the cluster but at least 100; 0 = kube-scheduler's adaptive default (50 less 1 per 125 nodes, at least 5); 100 = every node (the paper's method)")
	return cmd
}

// Values of --cpu-pods.
const (
	cpuPodsPolicy = "policy"
	cpuPodsHost   = "host"
)

func run(out io.Writer, f flags) error {
	var pols []placement.Policies
	switch strings.ToLower(f.policy) {
	case "all":
		for _, n := range []settings.Policy{settings.Binpack, settings.Spread} {
			for _, g := range []settings.Policy{settings.Binpack, settings.Spread} {
				pols = append(pols, placement.Policies{Node: n, GPU: g})
			}
		}
	case "":
		n, err := settings.ParsePolicy(f.nodePolicy)
		if err != nil {
			return fmt.Errorf("--node-policy: %v", err)
		}
		g, err := settings.ParsePolicy(f.gpuPolicy)
		if err != nil {
			return fmt.Errorf("--gpu-policy: %v", err)
		}
		pols = []placement.Policies{{Node: n, GPU: g}}
	default:
		return fmt.Errorf("--policy %q: the only value is \"all\"; use --node-policy and --gpu-policy for one pair", f.policy)
	}
	if f.splitCount < 1 || f.splitCount > settings.MaxSplitCount {
		return fmt.Errorf("--split-count %d: must be from 1 to %d", f.splitCount, settings.MaxSplitCount)
	}
	if f.memoryScaling < 1 || f.memoryScaling > 100 {
		return fmt.Errorf("--memory-scaling %g: must be from 1 to 100", f.memoryScaling)
	}
	if f.seeds < 1 || f.seeds > 1000 {
		return fmt.Errorf("--seeds %d: must be from 1 to 1000", f.seeds)
	}
	if err := f.output.Validate(); err != nil {
		return err
	}
	if f.cpuWeight < 0 || f.cpuWeight > 100 {
		return fmt.Errorf("--cpu-weight %g: must be from 0 to 100", f.cpuWeight)
	}
	if f.cpuPods != cpuPodsPolicy && f.cpuPods != cpuPodsHost {
		return fmt.Errorf("--cpu-pods %q: must be %s or %s", f.cpuPods, cpuPodsPolicy, cpuPodsHost)
	}
	if f.sample < 0 || f.sample > 100 {
		return fmt.Errorf("--percentage-of-nodes-to-score %d: must be from 0 (kube-scheduler's adaptive default) to 100 (every node)", f.sample)
	}
	if f.arrive <= 0 || f.arrive > 1000 {
		return fmt.Errorf("--arrive %g: must be from 1 to 1000", f.arrive)
	}
	builtin := f.cluster == "" && f.workload == ""
	c, err := loadCluster(f.cluster)
	if err != nil {
		return err
	}
	w, err := loadWorkload(f.workload, c)
	if err != nil {
		return err
	}
	sample := f.sample
	if sample == 0 {
		sample = AdaptivePercent(len(c.Nodes))
	}
	rep := &Report{Cluster: c.Source, Nodes: len(c.Nodes), GPUs: c.GPUCount(), Workload: w.Source, Tasks: len(w.Tasks),
		SplitCount: f.splitCount, MemoryScaling: f.memoryScaling, TargetPct: f.arrive, SamplePercent: sample}
	for _, pol := range pols {
		var runs []*Run
		for i := 0; i < f.seeds; i++ {
			r, err := Replay(c, w, Options{Policies: pol, SplitCount: f.splitCount, MemoryScaling: f.memoryScaling, Seed: f.seed + uint64(i), TargetPercent: f.arrive, CPUWeight: f.cpuWeight, HostOnlyCPUPods: f.cpuPods == cpuPodsHost, SamplePercent: sample})
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		rep.Results = append(rep.Results, Summarize(pol, runs))
	}
	if !f.output.Table() {
		return f.output.Print(out, rep)
	}
	if builtin {
		fmt.Fprint(out, exampleIntro)
	}
	if err := rep.WriteTable(out); err != nil {
		return err
	}
	if min := smallestShare(w); min > 0 && int64(f.splitCount)*min < 1000 {
		fmt.Fprintf(out, "note: shares as small as %.1f %% occur, but split count %d fits at most %d vGPUs on a GPU;\n"+
			"      use --split-count %d or more to let them pack (and to compare with the openb paper).\n",
			float64(min)/10, f.splitCount, f.splitCount, (1000+min-1)/min)
	}
	return nil
}

const exampleIntro = `No --cluster or --workload given: this is the built-in example, 4 nodes with
12 GPUs (2 × 4 A100 40GB, 2 × 2 T4) and a mix of inference shares (20 %), notebooks
(8000 MiB, 40 % cores), T4-only batch jobs (50 %), 2-GPU training and CPU-only pods.
Pods arrive in a random order until 130 % of the GPUs are asked for; the table shows
how much of the cluster's GPU capacity each policy pair manages to hand out.
Try --policy all, --seeds 10, or the openb trace (see --help).

`

// smallestShare is the smallest partial-GPU share of the workload in milli.
func smallestShare(w *Workload) int64 {
	var min int64
	for _, t := range w.Tasks {
		for _, s := range t.ShareMilli {
			if s < 1000 && (min == 0 || s < min) {
				min = s
			}
		}
	}
	return min
}

func loadCluster(path string) (*Cluster, error) {
	if path == "" {
		data, _ := example.ReadFile("example/cluster.yaml")
		return ReadClusterYAML("built-in example", data)
	}
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		nodes, err := openb.ReadNodes(fh)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		return ClusterFromOpenB(filepath.Base(path), nodes, OpenBGPUMemoryMiB)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ReadClusterYAML(filepath.Base(path), data)
}

func loadWorkload(path string, c *Cluster) (*Workload, error) {
	if path == "" {
		data, _ := example.ReadFile("example/workload.yaml")
		return ReadWorkloadYAML("built-in example", data, medianGPUMemory(c))
	}
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		tasks, err := openb.ReadTasks(fh)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		return WorkloadFromOpenB(filepath.Base(path), tasks)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ReadWorkloadYAML(filepath.Base(path), data, medianGPUMemory(c))
}

// medianGPUMemory is the reference for turning gpumem MiB into a share.
func medianGPUMemory(c *Cluster) int64 {
	var mems []int64
	for _, n := range c.Nodes {
		for _, g := range n.GPUs {
			mems = append(mems, g.MemoryMiB)
		}
	}
	if len(mems) == 0 {
		return 1
	}
	sort.Slice(mems, func(i, j int) bool { return mems[i] < mems[j] })
	return mems[len(mems)/2]
}
