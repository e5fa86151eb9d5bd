// Command vgpu-cluster runs the e2e control plane (test/cluster) by hand:
// `up` starts it in the background with simulated GPU nodes and prints the
// KUBECONFIG to use, `down` stops it. `make cluster-up` / `make
// cluster-down` wrap it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vgpu-io/vgpu/internal/gpumock"
	"github.com/vgpu-io/vgpu/test/cluster"
	"github.com/vgpu-io/vgpu/test/gpunode"
)

// Files in the state folder.
const (
	pidFile   = "vgpu-cluster.pid"   // the supervising process
	readyFile = "vgpu-cluster.ready" // holds the admin kubeconfig path once up
	logFile   = "vgpu-cluster.log"
)

type flags struct {
	dir        string
	nodes      int
	gpus       int
	model      string
	splitCount int
	timeout    time.Duration
}

func main() {
	f := &flags{}
	root := &cobra.Command{
		Use:          "vgpu-cluster",
		Short:        "Run a local control plane (etcd, kube-apiserver, kube-scheduler, kwok) with simulated GPU nodes",
		SilenceUsage: true,
	}
	root.PersistentFlags().StringVar(&f.dir, "dir", ".cache/cluster", "state folder: data, certificates, kubeconfigs, logs, pid file")
	up := &cobra.Command{
		Use:   "up",
		Short: "Start the cluster in the background and print `export KUBECONFIG=…`",
		RunE:  func(cmd *cobra.Command, _ []string) error { return runUp(cmd.Context(), f) },
	}
	serve := &cobra.Command{
		Use:    "serve",
		Short:  "Run the cluster in the foreground until SIGTERM or SIGINT",
		Hidden: true,
		RunE:   func(cmd *cobra.Command, _ []string) error { return runServe(f) },
	}
	for _, c := range []*cobra.Command{up, serve} {
		c.Flags().IntVar(&f.nodes, "nodes", 4, "simulated GPU nodes")
		c.Flags().IntVar(&f.gpus, "gpus", 8, "GPUs per node")
		c.Flags().StringVar(&f.model, "model", string(gpunode.A100_80GB), fmt.Sprintf("GPU model, one of %v", gpumock.Models()))
		c.Flags().IntVar(&f.splitCount, "split-count", 10, "vGPUs per GPU (nvidia.com/gpu capacity = gpus × split-count)")
		c.Flags().DurationVar(&f.timeout, "timeout", 3*time.Minute, "how long `up` waits for the cluster")
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster started by up and remove its state",
		RunE:  func(*cobra.Command, []string) error { return runDown(f) },
	}
	root.AddCommand(up, serve, down)
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}

// runUp starts `serve` detached (its own session, so it outlives this
// command and the terminal) and waits for it to report the cluster ready.
func runUp(ctx context.Context, f *flags) error {
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return err
	}
	if pid, alive := supervisor(dir); alive {
		return fmt.Errorf("a cluster is already running from %s (pid %d); run `make cluster-down` first", dir, pid)
	}
	// Leftovers of a cluster that was killed: start from a clean folder.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, logFile))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self, "serve", "--dir", dir, "--nodes", strconv.Itoa(f.nodes), "--gpus", strconv.Itoa(f.gpus),
		"--model", f.model, "--split-count", strconv.Itoa(f.splitCount))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var kc []byte
	err = wait.PollUntilContextCancel(wctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		select {
		case err := <-exited:
			return false, fmt.Errorf("cluster failed to start (%v); see %s:\n%s", err, logf.Name(), readTail(logf.Name()))
		default:
		}
		var err error
		kc, err = os.ReadFile(filepath.Join(dir, readyFile))
		return err == nil && len(kc) > 0, nil
	})
	switch {
	case err == nil:
		fmt.Printf("export KUBECONFIG=%s\n", strings.TrimSpace(string(kc)))
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case wctx.Err() != nil:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		return fmt.Errorf("cluster not up after %s; see %s", f.timeout, logf.Name())
	}
	return err
}

func runServe(f *flags) error {
	log, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	sugar := log.Sugar()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := os.WriteFile(filepath.Join(f.dir, pidFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: f.dir, Logf: sugar.Infof})
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			sugar.Errorw("stop", "err", err)
		}
		os.Remove(filepath.Join(f.dir, readyFile))
		os.Remove(filepath.Join(f.dir, pidFile))
	}()
	names, err := gpunode.Create(ctx, c.Client, gpunode.Spec{Count: f.nodes, GPUs: f.gpus, Model: gpunode.Model(f.model), SplitCount: f.splitCount})
	if err != nil {
		return err
	}
	if err := c.WaitForNodesReady(ctx, names...); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.dir, readyFile), []byte(c.Kubeconfig+"\n"), 0o644); err != nil {
		return err
	}
	sugar.Infow("cluster ready", "kubeconfig", c.Kubeconfig, "nodes", len(names), "pids", c.PIDs())
	<-ctx.Done()
	sugar.Info("stopping")
	return nil
}

func runDown(f *flags) error {
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return err
	}
	pid, alive := supervisor(dir)
	if alive {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		_ = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 45*time.Second, true,
			func(context.Context) (bool, error) { return !processAlive(pid), nil })
		if processAlive(pid) {
			// Its components die with it (Pdeathsig).
			_ = syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(500 * time.Millisecond)
		}
	}
	if left := cluster.ProcessesUsing(dir); len(left) > 0 {
		return fmt.Errorf("processes still running from %s: %v", dir, left)
	}
	if !alive {
		fmt.Printf("no cluster running from %s\n", dir)
	} else {
		fmt.Printf("cluster stopped (pid %d)\n", pid)
	}
	return os.RemoveAll(dir)
}

// supervisor reads the pid file and reports whether that process lives.
func supervisor(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, processAlive(pid)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie answers kill 0 but is gone for our purposes.
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return !(i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z')
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
