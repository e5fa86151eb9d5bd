// Command demo is `make demo`: a local control plane with simulated GPU
// nodes, every vgpu daemon running as a real process against it, the sample
// workloads of examples/ applied with kubectl, and what vgpu made of them
// shown with vgpuctl, first under binpack and then under spread.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/settings"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/daemons"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

type options struct {
	dir     string
	binDir  string
	repo    string
	keep    bool
	timeout time.Duration
}

func main() {
	o := options{}
	root := &cobra.Command{
		Use:           "demo",
		Short:         "Run vgpu on a local control plane with simulated GPU nodes and show what it does",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return run(ctx, o)
		},
	}
	f := root.Flags()
	f.StringVar(&o.dir, "dir", ".cache/demo", "state folder of the demo cluster (data, kubeconfig, logs)")
	f.StringVar(&o.binDir, "bin-dir", "bin", "folder with the vgpu binaries (make build)")
	f.StringVar(&o.repo, "repo", ".", "repository root (examples/ is read from it)")
	f.BoolVar(&o.keep, "keep", os.Getenv("KEEP") == "1", "leave the cluster running until Ctrl-C (default from KEEP=1)")
	f.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for each step")
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// The simulated fleet: two 8-GPU A100 training nodes and two 4-GPU T4
// inference nodes, each with its own device plugin and monitor in mock mode.
var fleet = []struct {
	prefix string
	model  gpunode.Model
	gpus   int
}{
	{"a100", gpunode.A100_80GB, 8},
	{"t4", gpunode.T4, 4},
}

const nodesPerGroup = 2

func run(ctx context.Context, o options) error {
	start := time.Now()
	var err error
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	if o.binDir, err = filepath.Abs(o.binDir); err != nil {
		return err
	}
	if o.repo, err = filepath.Abs(o.repo); err != nil {
		return err
	}
	// The extender and webhook come from the same folder as the others.
	os.Setenv(daemons.EnvBinDir, o.binDir)
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}

	step("1/6", "starting the control plane: etcd, kube-apiserver, kube-scheduler, kwok")
	bins, err := cluster.FindBinaries()
	if err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: o.dir, NoScheduler: true, Binaries: &bins})
	if err != nil {
		return err
	}
	defer func() {
		if !o.keep {
			step("6/6", "tearing down (KEEP=1 leaves the cluster up)")
			_ = c.Stop()
			_ = os.RemoveAll(o.dir)
		}
	}()
	say("API server %s, logs in %s", c.APIServerURL, filepath.Join(o.dir, "logs"))

	step("2/6", "starting vgpu: extender beside kube-scheduler, webhook, and per node a device plugin and a monitor")
	st := settings.Default()
	if err := daemons.SetSettings(ctx, c, st); err != nil {
		return err
	}
	ext, err := daemons.StartExtender(ctx, c)
	if err != nil {
		return fmt.Errorf("extender: %w (log %s)", err, c.LogPath(daemons.ExtenderName))
	}
	schedCfg, err := daemons.SchedulerConfig(ext.URL)
	if err != nil {
		return err
	}
	c.SetSchedulerConfig(schedCfg)
	if err := c.StartScheduler(ctx); err != nil {
		return err
	}
	if _, err := daemons.StartWebhook(ctx, c); err != nil {
		return fmt.Errorf("webhook: %w (log %s)", err, c.LogPath(daemons.WebhookName))
	}
	say("extender %s, webhook registered (failurePolicy Fail)", ext.URL)

	var nodes []string
	monitors := map[string]string{} // node -> its monitor's address
	for _, g := range fleet {
		names, err := gpunode.Create(ctx, c.Client, gpunode.Spec{
			Prefix: g.prefix, Count: nodesPerGroup, GPUs: g.gpus, Model: g.model,
			Labels: map[string]string{contract.LabelGPUNode: "true"}, NoInventory: true,
		})
		if err != nil {
			return err
		}
		for _, n := range names {
			if monitors[n], err = startNodeAgents(ctx, c, o, n, gpunode.MockFlag(g.model, g.gpus)); err != nil {
				return err
			}
		}
		nodes = append(nodes, names...)
	}
	if err := c.WaitForNodesReady(ctx, nodes...); err != nil {
		return err
	}
	if err := waitInventories(ctx, c, nodes, o.timeout); err != nil {
		return err
	}
	say("%d GPU nodes published their inventory: %s", len(nodes), strings.Join(nodes, ", "))

	kubectl := func(args ...string) error {
		return show(ctx, bins.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	}
	vgpuctl := func(args ...string) error {
		return show(ctx, filepath.Join(o.binDir, "vgpuctl"), append(args, "--kubeconfig", c.Kubeconfig)...)
	}
	examples := filepath.Join(o.repo, "examples")

	step("3/6", fmt.Sprintf("applying examples/ under node policy %s, GPU policy %s", st.NodeSchedulerPolicy, st.GPUSchedulerPolicy))
	if err := applyExamples(ctx, c, kubectl, examples, o.timeout); err != nil {
		return err
	}
	say("a pod that asks for more memory than any GPU has is turned away at admission:")
	if err := kubectl("apply", "-f", filepath.Join(examples, "denied")); err == nil {
		return errors.New("the webhook admitted examples/denied: it must deny it")
	}

	step("4/6", "what vgpu made of it: vgpuctl describe node")
	if err := vgpuctl("describe", "node"); err != nil {
		return err
	}
	fmt.Println()
	// The monitors run as processes here, not as pods vgpuctl could find:
	// name the busiest node's one. Its uuids are the node's own (one GPU
	// catalogue), so each GPU's measured memory and utilisation show.
	busiest := busiestNode(ctx, c)
	if err := vgpuctl("describe", "node", busiest, "--usage", "--monitor-address", monitors[busiest]); err != nil {
		return err
	}

	step("5/6", "switching both policies to spread (the settings ConfigMap, no restart) and re-applying")
	st.NodeSchedulerPolicy, st.GPUSchedulerPolicy = settings.Spread, settings.Spread
	if err := daemons.SetSettings(ctx, c, st); err != nil {
		return err
	}
	if err := kubectl("delete", "-k", examples, "--wait=true"); err != nil {
		return err
	}
	// The extender reads the ConfigMap through an informer: give it a moment.
	time.Sleep(2 * time.Second)
	if err := applyExamples(ctx, c, kubectl, examples, o.timeout); err != nil {
		return err
	}
	if err := vgpuctl("describe", "node"); err != nil {
		return err
	}
	fmt.Println()
	if err := vgpuctl("describe", "node", busiestNode(ctx, c)); err != nil {
		return err
	}

	say("demo finished in %s", time.Since(start).Round(time.Second))
	if o.keep {
		fmt.Printf("\nThe cluster stays up until Ctrl-C:\n  export KUBECONFIG=%s\n  export PATH=%s:%s:$PATH\n",
			c.Kubeconfig, filepath.Dir(bins.Kubectl), o.binDir)
		<-ctx.Done()
		step("6/6", "tearing down")
		_ = c.Stop()
		_ = os.RemoveAll(o.dir)
	}
	return nil
}

// startNodeAgents runs the device plugin and the monitor of one kwok node,
// both simulating the node's GPUs with the same mock, so the monitor's
// measurements name the GPUs the device plugin published.
// A kwok node has no kubelet, so the plugin writes its capacity into the
// Node itself (--advertise-capacity) and its kubelet socket dir is private.
func startNodeAgents(ctx context.Context, c *cluster.Cluster, o options, node, mock string) (monitorAddr string, err error) {
	dir := filepath.Join(o.dir, "nodes", node)
	for _, d := range []string{"device-plugins", "vgpu/containers", "sys", "proc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	ports, err := cluster.FreePorts(2)
	if err != nil {
		return "", err
	}
	plugin := fmt.Sprintf("127.0.0.1:%d", ports[0])
	err = c.StartProcess(ctx, "deviceplugin-"+node, filepath.Join(o.binDir, "deviceplugin"), []string{
		"--node-name=" + node, "--nvml=" + mock, "--kubeconfig=" + c.Kubeconfig,
		"--kubelet-socket-dir=" + filepath.Join(dir, "device-plugins"),
		"--host-root=" + filepath.Join(dir, "vgpu"),
		"--sysfs-root=" + filepath.Join(dir, "sys"),
		"--libvgpu=" + filepath.Join(o.repo, "libvgpu", "build", "libvgpu.so"),
		"--metrics-address=" + plugin,
		"--advertise-capacity",
	}, cluster.HTTPReady("http://"+plugin+"/readyz"))
	if err != nil {
		return "", fmt.Errorf("device plugin of %s: %w (log %s)", node, err, c.LogPath("deviceplugin-"+node))
	}
	monitor := fmt.Sprintf("127.0.0.1:%d", ports[1])
	err = c.StartProcess(ctx, "monitor-"+node, filepath.Join(o.binDir, "monitor"), []string{
		"--node-name=" + node, "--nvml=" + mock, "--kubeconfig=" + c.Kubeconfig,
		"--host-root=" + filepath.Join(dir, "vgpu"), "--proc-root=" + filepath.Join(dir, "proc"),
		"--metrics-address=" + monitor,
	}, cluster.HTTPReady("http://"+monitor+"/readyz"))
	if err != nil {
		return "", fmt.Errorf("monitor of %s: %w (log %s)", node, err, c.LogPath("monitor-"+node))
	}
	return monitor, nil
}

// waitInventories waits until every node carries its device plugin's
// inventory and advertises its vGPU slots.
func waitInventories(ctx context.Context, c *cluster.Cluster, nodes []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, n := range nodes {
		err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			node, err := c.Client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			_, derr := annotation.DecodeDevices(node.Annotations[contract.AnnotationDevices])
			slots := node.Status.Allocatable[corev1.ResourceName(contract.ResourceGPU)]
			return derr == nil && !slots.IsZero(), nil
		})
		if err != nil {
			return fmt.Errorf("node %s: no vgpu inventory from its device plugin: %w", n, err)
		}
	}
	return nil
}

// applyExamples applies examples/ with kubectl and waits for every pod of it
// to be bound and Running.
func applyExamples(ctx context.Context, c *cluster.Cluster, kubectl func(...string) error, dir string, timeout time.Duration) error {
	if err := kubectl("apply", "-k", dir); err != nil {
		return err
	}
	want, err := countPods(dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pods, err := c.WaitForPods(ctx, "default", "app", want, cluster.PodRunning)
	if err != nil {
		c.Dump(context.Background(), os.Stderr)
		return err
	}
	say("%d pods bound by the extender and Running:", len(pods))
	return kubectl("get", "pods", "-l", "app", "-o", "wide")
}

// busiestNode is the node that holds the most of the demo's pods, the one
// worth describing GPU by GPU.
func busiestNode(ctx context.Context, c *cluster.Cluster) string {
	pods, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app"})
	if err != nil || len(pods.Items) == 0 {
		return ""
	}
	count := map[string]int{}
	best := ""
	for _, p := range pods.Items {
		n := p.Spec.NodeName
		count[n]++
		if best == "" || count[n] > count[best] || (count[n] == count[best] && n < best) {
			best = n
		}
	}
	return best
}

// countPods counts the Pods examples/ defines, so the demo waits for all of
// them whatever the samples become.
func countPods(dir string) (int, error) {
	n := 0
	matches, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return 0, err
	}
	for _, m := range matches {
		if filepath.Base(m) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(m)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(line) == "kind: Pod" {
				n++
			}
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%s: no Pods found", dir)
	}
	return n, nil
}

// show runs a command with its output on the demo's own, echoing it first.
func show(ctx context.Context, bin string, args ...string) error {
	shown := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == "--kubeconfig" {
			i++
			continue
		}
		shown = append(shown, args[i])
	}
	fmt.Printf("\n$ %s %s\n", filepath.Base(bin), strings.Join(shown, " "))
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	return cmd.Run()
}

func step(n, what string) { fmt.Printf("\n==> [%s] %s\n", n, what) }
func say(format string, args ...any) {
	fmt.Printf("    "+format+"\n", args...)
}
