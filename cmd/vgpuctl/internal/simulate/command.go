package simulate

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

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
	fgd                   bool
	churn                 bool
	compress              float64
	kubeconfig, context   string
	// notForWhatIf are the flags given that a what-if has no use for.
	notForWhatIf []string
}

// newClient builds the client of a what-if run (tests replace it).
var newClient = func(kubeconfig, kubeContext string) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, err
	}
	rc.Timeout = 30 * time.Second
	return kubernetes.NewForConfig(rc)
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
comparable with the paper's.

What-if (--kubeconfig, --workload pods.yaml): the cluster's own nodes,
inventories and bound pods; the pods of pods.yaml placed in order as
kube-scheduler and vgpu's extender would: kube-scheduler's filters and
scores (the score profile of the deployed vgpu-scheduler's ConfigMap, else
vgpu's shipped one; the output says which) plus the extender's priorities.
Equally good nodes, pending pods' reasons and pods the model cannot judge
(topology spread, affinity, claims, ...) are noted (docs/placement.md).`,
		Example: `  vgpuctl simulate placement
  vgpuctl simulate placement --policy all \
    --cluster ../shared/traces/openb/openb_node_list_gpu_node.csv \
    --workload ../shared/traces/openb/openb_pod_list_default.csv \
    --split-count 20 --seeds 10`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, name := range []string{"cpu-weight", "cpu-pods", "percentage-of-nodes-to-score", "split-count", "memory-scaling", "seed", "seeds", "arrive", "churn-compress"} {
				if cmd.Flags().Changed(name) {
					f.notForWhatIf = append(f.notForWhatIf, name)
				}
			}
			return run(cmd.OutOrStdout(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "cluster: YAML file or openb node list (.csv); default: the built-in example")
	fl.StringVar(&f.workload, "workload", "", "workload: YAML Pod stream or openb task list (.csv); default: the built-in example")
	fl.StringVar(&f.nodePolicy, "node-policy", string(def.NodeSchedulerPolicy), "node scheduler policy: binpack, spread or fragmentation")
	fl.StringVar(&f.gpuPolicy, "gpu-policy", string(def.GPUSchedulerPolicy), "GPU scheduler policy: binpack, spread or fragmentation")
	fl.StringVar(&f.policy, "policy", "", `"all" compares the four binpack/spread pairs, fragmentation/fragmentation and the FGD baseline side by side; "fgd" runs the FGD baseline alone (both override --node-policy and --gpu-policy)`)
	fl.IntVar(&f.splitCount, "split-count", def.DeviceSplitCount, "deviceSplitCount: most vGPUs on one GPU")
	fl.Float64Var(&f.memoryScaling, "memory-scaling", def.DeviceMemoryScaling, "deviceMemoryScaling: >1 overcommits GPU memory")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed of the first replay")
	fl.IntVar(&f.seeds, "seeds", 1, "number of replays, seeds seed..seed+N-1, averaged")
	f.output.AddFlag(fl)
	fl.Float64Var(&f.arrive, "arrive", 130, "stop when the GPU demand would pass this % of capacity")
	fl.Float64Var(&f.cpuWeight, "cpu-weight", 1, "weight of kube-scheduler's CPU/memory score (NodeResourcesFit) beside vgpu's GPU score; 0 = GPU score alone")
	fl.StringVar(&f.cpuPods, "cpu-pods", cpuPodsPolicy, `how CPU-only pods are ranked: "policy" (like GPU pods: vgpu's GPU score of the node as it stands, plus --cpu-weight × the CPU/memory score; the paper's method) or "host" (the CPU/memory score alone, blind to GPUs, as kube-scheduler ranks pods that vgpu's extender never sees)`)
	fl.BoolVar(&f.fgd, "fgd", false, "with the fragmentation policy: measure against the whole workload's distribution of shapes, known up front, as the FGD paper does (a baseline), instead of learning it as pods arrive")
	fl.BoolVar(&f.churn, "churn", false, "replay on the trace's own clock with departures: pods arrive at creation_time, leave at deletion_time, and wait (retried whenever a pod leaves) until their deletion time; needs an openb list with times")
	fl.Float64Var(&f.compress, "churn-compress", 1, "with --churn: the pods arrive this many times as fast, each running as long as in the trace (openb's own clock peaks near 1 % of the GPUs in use)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "what-if on a live cluster: start from its nodes, their vGPU inventories and the pods bound to them, and place the --workload pods (YAML) in order as kube-scheduler (its deployed score profile, else vgpu's shipped one) and vgpu's extender would, saying where each would land under each policy")
	fl.StringVar(&f.context, "context", "", "with --kubeconfig: the kubeconfig context to use")
	fl.IntVar(&f.sample, "percentage-of-nodes-to-score", 100, "kube-scheduler's setting of that name: each pod is ranked only among the nodes it would hand the extender, the first that pass its own filters from where the previous pod's search stopped, this % of the cluster but at least 100; 0 = kube-scheduler's adaptive default (50 less 1 per 125 nodes, at least 5); 100 = every node (the paper's method)")
	return cmd
}

// Values of --cpu-pods.
const (
	cpuPodsPolicy = "policy"
	cpuPodsHost   = "host"
)

// variant is one column of the report: a policy pair, and for the
// fragmentation policy whether it measures against the whole workload's
// mix (the FGD baseline) instead of learning it.
type variant struct {
	pol placement.Policies
	fgd bool
}

func run(out io.Writer, f flags) error {
	pols, err := f.variants()
	if err != nil {
		return err
	}
	if err := f.validate(); err != nil {
		return err
	}
	if f.kubeconfig != "" {
		return runWhatIf(out, f, pols)
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
	if f.churn {
		return runChurn(out, c, w, f, pols, sample)
	}
	rep := &Report{Cluster: c.Source, Nodes: len(c.Nodes), GPUs: c.GPUCount(), Workload: w.Source, Tasks: len(w.Tasks),
		SplitCount: f.splitCount, MemoryScaling: f.memoryScaling, TargetPct: f.arrive, SamplePercent: sample}
	for _, v := range pols {
		var runs []*Run
		for i := 0; i < f.seeds; i++ {
			r, err := Replay(c, w, Options{Policies: v.pol, SplitCount: f.splitCount, MemoryScaling: f.memoryScaling, Seed: f.seed + uint64(i), TargetPercent: f.arrive, CPUWeight: f.cpuWeight, HostOnlyCPUPods: f.cpuPods == cpuPodsHost, SamplePercent: sample, FGD: v.fgd})
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		sum := Summarize(v.pol, runs)
		if v.fgd {
			sum.Label = "fgd"
		}
		rep.Results = append(rep.Results, sum)
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

// variants are the policies --policy, --node-policy, --gpu-policy and --fgd
// ask for, in the order the table prints them.
func (f flags) variants() ([]variant, error) {
	frag := placement.Policies{Node: settings.Fragmentation, GPU: settings.Fragmentation}
	switch strings.ToLower(f.policy) {
	case "all":
		var pols []variant
		for _, n := range []settings.Policy{settings.Binpack, settings.Spread} {
			for _, g := range []settings.Policy{settings.Binpack, settings.Spread} {
				pols = append(pols, variant{pol: placement.Policies{Node: n, GPU: g}})
			}
		}
		return append(pols, variant{pol: frag}, variant{pol: frag, fgd: true}), nil
	case "":
		n, err := settings.ParsePolicy(f.nodePolicy)
		if err != nil {
			return nil, fmt.Errorf("--node-policy: %v", err)
		}
		g, err := settings.ParsePolicy(f.gpuPolicy)
		if err != nil {
			return nil, fmt.Errorf("--gpu-policy: %v", err)
		}
		if f.fgd && n != settings.Fragmentation && g != settings.Fragmentation {
			return nil, fmt.Errorf("--fgd applies to the fragmentation policy: set --node-policy or --gpu-policy to fragmentation")
		}
		return []variant{{pol: placement.Policies{Node: n, GPU: g}, fgd: f.fgd}}, nil
	case "fgd":
		return []variant{{pol: frag, fgd: true}}, nil
	}
	return nil, fmt.Errorf("--policy %q: must be \"all\" (every policy pair, the fragmentation policy and the FGD baseline) or \"fgd\"; use --node-policy and --gpu-policy for one pair", f.policy)
}

// validate checks the numeric flags and the output format, naming the flag
// and its allowed values.
func (f flags) validate() error {
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

// runChurn prints one row per policy of the churn replay.
func runChurn(out io.Writer, c *Cluster, w *Workload, f flags, pols []variant, sample int) error {
	fmt.Fprintf(out, "cluster %s: %d nodes, %d GPUs · workload %s: %d tasks · churn: the trace's own clock (arrivals %g× as fast), with departures\n\n", c.Source, len(c.Nodes), c.GPUCount(), w.Source, len(w.Tasks), f.compress)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tGPU demand placed %\tGPU pods never run\tpods that waited\tmean wait, s\tpeak allocation %\treplay wall time, s\t")
	for _, v := range pols {
		r, err := ReplayChurn(c, w, Options{Policies: v.pol, SplitCount: f.splitCount, MemoryScaling: f.memoryScaling, Seed: f.seed, CPUWeight: f.cpuWeight, HostOnlyCPUPods: f.cpuPods == cpuPodsHost, SamplePercent: sample, FGD: v.fgd}, f.compress)
		if err != nil {
			return err
		}
		name := string(v.pol.Node) + "/" + string(v.pol.GPU)
		if v.fgd {
			name = "fgd"
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%d\t%d\t%.0f\t%.2f\t%.3f\t\n", name, r.PlacedPct, r.NeverRan, r.Waited, r.MeanWaitSeconds, r.PeakAllocPct, r.Wall.Seconds())
	}
	return tw.Flush()
}

// runWhatIf places --workload on the live cluster under each policy, as
// kube-scheduler with the deployed (else the shipped) score profile and
// vgpu's extender would.
func runWhatIf(out io.Writer, f flags, pols []variant) error {
	if f.cluster != "" || f.churn {
		return errors.New("--kubeconfig reads the cluster from the API server: drop --cluster and --churn")
	}
	if len(f.notForWhatIf) > 0 {
		return fmt.Errorf("--%s does not apply with --kubeconfig: the what-if ranks nodes as the cluster's kube-scheduler and vgpu's extender do, from the nodes' own inventories", f.notForWhatIf[0])
	}
	if f.workload == "" || strings.EqualFold(filepath.Ext(f.workload), ".csv") {
		return errors.New("--kubeconfig needs --workload: a YAML stream of the Pods to place")
	}
	cs, err := newClient(f.kubeconfig, f.context)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live, err := LiveCluster(ctx, cs)
	if err != nil {
		return err
	}
	sp, err := LoadScoreProfile(ctx, cs)
	if err != nil {
		return err
	}
	w, err := loadWorkload(f.workload, live.Cluster)
	if err != nil {
		return err
	}
	rep := newWhatIfReport(live, w, sp)
	for _, v := range pols {
		r, err := WhatIf(live, w, sp, Options{Policies: v.pol, FGD: v.fgd})
		if err != nil {
			return err
		}
		name := string(v.pol.Node) + "/" + string(v.pol.GPU)
		if v.fgd {
			name = "fgd"
		}
		rep.add(name, r)
	}
	if !f.output.Table() {
		return f.output.Print(out, rep)
	}
	return rep.WriteTable(out)
}
