// Command bench-scheduling measures kube-scheduler throughput on a local
// control plane with simulated GPU nodes (`make bench-scheduling`).
//
// For each mode it starts a fresh cluster with the scheduler stopped,
// creates N nodes of 8 GPUs and M pods in bulk through client-go, starts
// the scheduler and watches the pods. It reports
//   - pods/s: bound pods divided by the span from the first binding to the
//     last, as observed by the watch;
//   - p50/p99 latency: per pod, from the moment kube-scheduler was started to
//     the watch event that shows the pod bound (all pods exist before the
//     scheduler starts, so this is how long a pod of the backlog waits);
//   - first: scheduler start to the first binding (startup and cache sync).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

type options struct {
	nodes, pods, gpus int
	qps               float32
	workers           int
	schedulerQPS      float32
	nodesToScore      int32
	modeNodesToScore  map[string]int64
	modes             []string
	timeout           time.Duration
	keep              bool
	profileDir        string
}

type result struct {
	mode          string
	bound         int
	span          time.Duration // first binding → last binding
	first         time.Duration // scheduler start → first binding
	p50, p99, max time.Duration // scheduler start → binding
	create        time.Duration // creating the M pods
	stats         string        // the mode's own lines (mode.stats)
	cpu           string        // CPU per component while the scheduler ran
	idle          string        // CPU per component before it started
	requests      string        // API requests while the scheduler ran
	scheduler     string        // kube-scheduler's own timings
	nodesToScore  int32         // percentageOfNodesToScore, 0: adaptive
}

func (r result) podsPerSecond() float64 {
	if r.span <= 0 {
		return 0
	}
	return float64(r.bound) / r.span.Seconds()
}

const namespace = "bench"

func main() {
	o := &options{}
	cmd := &cobra.Command{
		Use:          "bench-scheduling",
		Short:        "Measure kube-scheduler throughput with simulated GPU nodes",
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, m := range o.modes {
				if _, ok := modes[m]; !ok {
					return fmt.Errorf("--modes: %q unknown; known modes: %v", m, modeNames())
				}
			}
			if o.nodesToScore < 0 || o.nodesToScore > 100 {
				return fmt.Errorf("--percentage-of-nodes-to-score %d: must be from 0 (adaptive) to 100", o.nodesToScore)
			}
			for m, pct := range o.modeNodesToScore {
				if _, ok := modes[m]; !ok {
					return fmt.Errorf("--mode-percentage-of-nodes-to-score: mode %q unknown; known modes: %v", m, modeNames())
				}
				if pct < 0 || pct > 100 {
					return fmt.Errorf("--mode-percentage-of-nodes-to-score %s=%d: must be from 0 (adaptive) to 100", m, pct)
				}
			}
			if o.nodes < 1 || o.pods < 1 || o.gpus < 1 || o.qps <= 0 || o.workers < 1 {
				return fmt.Errorf("--nodes, --pods, --gpus, --workers must be at least 1 and --qps positive")
			}
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.nodes, "nodes", 1000, "simulated nodes")
	f.IntVar(&o.pods, "pods", 3000, "pods, created while the scheduler is stopped")
	f.IntVar(&o.gpus, "gpus", 8, "GPUs per node")
	f.Float32Var(&o.qps, "qps", 2000, "client-go QPS (and burst) for creating nodes and pods")
	f.IntVar(&o.workers, "workers", 64, "concurrent pod creators")
	f.Float32Var(&o.schedulerQPS, "scheduler-qps", 0, "kube-scheduler clientConnection.qps (burst = 2×); 0 keeps the scheduler's default (50), which caps binding at about 50 pods/s")
	f.Int32Var(&o.nodesToScore, "percentage-of-nodes-to-score", 0, "kube-scheduler's percentageOfNodesToScore for every mode; 0 keeps its adaptive default (about 42 % of 1,000 nodes)")
	f.StringToInt64Var(&o.modeNodesToScore, "mode-percentage-of-nodes-to-score", nil, "percentageOfNodesToScore for some modes only, e.g. dra=10 (what an operator could set in the profile that schedules DRA pods); overrides --percentage-of-nodes-to-score for those modes")
	f.StringSliceVar(&o.modes, "modes", []string{"stock"}, fmt.Sprintf("modes to run, in order; ratios are against the first (known: %v)", modeNames()))
	f.DurationVar(&o.timeout, "timeout", 15*time.Minute, "limit for each mode")
	f.BoolVar(&o.keep, "keep", false, "keep each cluster's data folder (logs) instead of deleting it")
	f.StringVar(&o.profileDir, "profile", "", "write CPU profiles of kube-scheduler, the API server and the mode's own components to this folder, <mode>-<component>.pprof, recorded while the scheduler binds")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	zl, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	defer func() { _ = zl.Sync() }()
	log := zl.Sugar()

	var results []result
	for _, name := range o.modes {
		r, err := runMode(ctx, log, o, modes[name])
		if err != nil {
			return fmt.Errorf("mode %s: %w", name, err)
		}
		results = append(results, r)
	}
	report(os.Stdout, o, results)
	return nil
}

func runMode(ctx context.Context, log *zap.SugaredLogger, o *options, m mode) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res := result{mode: m.name}

	dir, err := os.MkdirTemp("", "vgpu-bench-")
	if err != nil {
		return res, err
	}
	// The default in-flight limits would throttle bulk creation, not the
	// scheduler.
	apiServerArgs := []string{"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000"}
	if o.profileDir != "" {
		apiServerArgs = append(apiServerArgs, "--profiling=true")
	}
	c, err := cluster.Start(ctx, cluster.Options{
		Dir:           dir,
		NoScheduler:   true,
		Logf:          log.Infof,
		APIServerArgs: apiServerArgs,
		SchedulerArgs: schedulerArgs,
	})
	if err != nil {
		return res, err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			log.Errorw("stop cluster", "err", err)
		}
		if o.keep {
			log.Infof("mode %s: cluster data and logs kept in %s", m.name, dir)
		} else {
			os.RemoveAll(dir)
		}
	}()

	fast := rest.CopyConfig(c.Config)
	fast.QPS, fast.Burst = o.qps, int(o.qps)
	client, err := kubernetes.NewForConfig(fast)
	if err != nil {
		return res, err
	}

	start := time.Now()
	spec := m.node
	spec.Count, spec.GPUs, spec.Prefix = o.nodes, o.gpus, "node"
	names, err := gpunode.Create(ctx, client, spec)
	if err != nil {
		return res, err
	}
	if err := c.WaitForNodesReady(ctx, names...); err != nil {
		return res, err
	}
	log.Infof("mode %s: %d nodes Ready in %s", m.name, len(names), time.Since(start).Round(time.Millisecond))

	schedCfg, err := m.setup(ctx, c)
	if err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	if o.schedulerQPS > 0 {
		if schedCfg == nil {
			schedCfg = &schedv1.KubeSchedulerConfiguration{}
		}
		schedCfg.ClientConnection.QPS = o.schedulerQPS
		schedCfg.ClientConnection.Burst = int32(2 * o.schedulerQPS)
	}
	pct := o.nodesToScore
	if p, ok := o.modeNodesToScore[m.name]; ok {
		pct = int32(p)
	}
	res.nodesToScore = pct
	if pct > 0 {
		if schedCfg == nil {
			schedCfg = &schedv1.KubeSchedulerConfiguration{}
		}
		schedCfg.PercentageOfNodesToScore = &pct
	}
	c.SetSchedulerConfig(schedCfg)

	if err := c.CreateNamespace(ctx, namespace); err != nil {
		return res, err
	}
	start = time.Now()
	if err := createPods(ctx, client, o, m); err != nil {
		return res, err
	}
	res.create = time.Since(start)
	log.Infof("mode %s: %d pods created in %s (%.0f/s)", m.name, o.pods, res.create.Round(time.Millisecond), float64(o.pods)/res.create.Seconds())

	// Watch from the state after creation: every binding from here on is
	// the scheduler's.
	list, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return res, err
	}
	// The API server drops a watcher that falls behind a burst of events
	// (likely on a busy 2-core machine); the retry watcher resumes from the
	// last version seen, so no binding is missed.
	pods := client.CoreV1().Pods(namespace)
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return pods.Watch(ctx, o)
		},
	})
	if err != nil {
		return res, err
	}
	defer w.Stop()

	// What the cluster burns with nothing to schedule runs on during the
	// measurement too.
	idleBefore, idleStart := cpuTimes(c.PIDs()), time.Now()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(idleWindow):
	}
	res.idle = idleReport(idleBefore, cpuTimes(c.PIDs()), time.Since(idleStart))

	schedStart := time.Now()
	if err := c.StartScheduler(ctx); err != nil {
		return res, err
	}
	log.Infof("mode %s: scheduler started, watching %d pods", m.name, o.pods)
	// Read once kube-scheduler is up: its start-up (cache sync) is left
	// out, the same for every mode.
	cpuBefore, cpuStart := cpuTimes(c.PIDs()), time.Now()
	reqBefore, err := apiRequests(ctx, client)
	if err != nil {
		return res, err
	}
	profiles := func() []string { return nil }
	if o.profileDir != "" {
		bases := map[string]string{"kube-scheduler": c.SchedulerURL()}
		if m.pprof != nil {
			for name, url := range m.pprof() {
				bases[name] = url
			}
		}
		profiles = captureProfiles(ctx, o.profileDir, m.name, bases, client)
	}
	bound, err := watchBindings(ctx, w, o.pods)
	if err != nil {
		return res, fmt.Errorf("%w (%d/%d pods bound; see %s)", err, len(bound), o.pods, c.LogPath("kube-scheduler"))
	}
	res.cpu = cpuReport(cpuBefore, cpuTimes(c.PIDs()), len(bound), time.Since(cpuStart))
	reqAfter, err := apiRequests(ctx, client)
	if err != nil {
		return res, err
	}
	res.requests = requestReport(reqBefore, reqAfter, len(bound))
	if res.scheduler, err = schedulerReport(ctx, c.SchedulerURL()); err != nil {
		return res, err
	}
	for _, p := range profiles() {
		log.Infof("mode %s: profile %s", m.name, p)
	}
	lat := make([]time.Duration, 0, len(bound))
	for _, t := range bound {
		lat = append(lat, t.Sub(schedStart))
	}
	slices.Sort(lat)
	res.bound = len(lat)
	res.first = lat[0]
	res.span = lat[len(lat)-1] - lat[0]
	res.p50, res.p99, res.max = quantile(lat, 0.50), quantile(lat, 0.99), lat[len(lat)-1]
	log.Infof("mode %s: %d pods bound, %.1f pods/s", m.name, res.bound, res.podsPerSecond())
	if m.stats != nil {
		if res.stats, err = m.stats(ctx); err != nil {
			return res, fmt.Errorf("stats: %w", err)
		}
	}
	return res, nil
}

// watchBindings records when the watch first shows each pod with a node,
// until want pods are bound.
func watchBindings(ctx context.Context, w watch.Interface, want int) (map[string]time.Time, error) {
	bound := make(map[string]time.Time, want)
	for len(bound) < want {
		select {
		case <-ctx.Done():
			return bound, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return bound, fmt.Errorf("pod watch closed")
			}
			if ev.Type == watch.Error {
				return bound, fmt.Errorf("pod watch: %v", ev.Object)
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.Spec.NodeName == "" {
				continue
			}
			if _, seen := bound[p.Name]; !seen {
				bound[p.Name] = time.Now()
			}
		}
	}
	return bound, nil
}

func createPods(ctx context.Context, client kubernetes.Interface, o *options, m mode) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.workers)
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.pods || ctx.Err() != nil {
					return
				}
				if m.before != nil {
					if err := m.before(ctx, client, i); err != nil {
						errs <- fmt.Errorf("before pod %d: %w", i, err)
						return
					}
				}
				if _, err := client.CoreV1().Pods(namespace).Create(ctx, m.pod(i), metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create pod %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func report(w *os.File, o *options, results []result) {
	schedQPS := "default (50)"
	if o.schedulerQPS > 0 {
		schedQPS = fmt.Sprintf("%g", o.schedulerQPS)
	}
	sample := "adaptive"
	if o.nodesToScore > 0 {
		sample = fmt.Sprintf("%d %%", o.nodesToScore)
	}
	for _, r := range results {
		if r.nodesToScore != o.nodesToScore {
			sample += fmt.Sprintf(" (%s: %d %%)", r.mode, r.nodesToScore)
		}
	}
	fmt.Fprintf(w, "bench-scheduling: %d nodes × %d GPUs, %d pods, scheduler client QPS %s, percentageOfNodesToScore %s\n", o.nodes, o.gpus, o.pods, schedQPS, sample)
	fmt.Fprintln(w, "latency = scheduler start → pod seen bound; pods/s = bound / (first → last binding)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tbound\tpods/s\tspan\tfirst\tp50\tp99\tmax\tcreate\tvs "+results[0].mode+"\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t\n", r.mode, r.bound, r.podsPerSecond(),
			secs(r.span), secs(r.first), secs(r.p50), secs(r.p99), secs(r.max), secs(r.create),
			r.podsPerSecond()/results[0].podsPerSecond())
	}
	tw.Flush()
	for _, r := range results {
		fmt.Fprintf(w, "%s: %s\n", r.mode, r.cpu)
		fmt.Fprintf(w, "%s: %s\n", r.mode, r.idle)
		fmt.Fprintf(w, "%s: %s\n", r.mode, r.requests)
		fmt.Fprintf(w, "%s: %s\n", r.mode, r.scheduler)
		if r.stats != "" {
			fmt.Fprintf(w, "%s: %s\n", r.mode, r.stats)
		}
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
