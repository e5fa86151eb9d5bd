// Package cluster runs a local Kubernetes control plane for tests, demos and
// benchmarks: real etcd, kube-apiserver and kube-scheduler built from the
// pinned modules under test/tools, and kwok simulating the nodes and marking
// bound pods Running. Everything listens on free loopback ports and lives in
// one data folder; Stop (and the death of the harness process) leaves no
// process behind.
//
// Without a controller manager (the default, see Options.Controllers), the
// harness itself does the two chores tests
// depend on: it creates the "default" ServiceAccount in every namespace and
// removes the node.kubernetes.io/not-ready taint once kwok reports a node
// Ready.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	schedv1 "k8s.io/kube-scheduler/config/v1"
)

// Options configure a cluster. The zero value is a working cluster with the
// default scheduler profile in a fresh temporary folder.
type Options struct {
	// Dir is the data folder (etcd data, certificates, kubeconfigs, configs,
	// logs/). Empty: a new temporary folder, removed by Stop.
	Dir string
	// Binaries to run; nil: FindBinaries.
	Binaries *Binaries
	// SchedulerConfig is the configuration kube-scheduler runs with; nil:
	// one default profile. The harness fills in clientConnection.kubeconfig
	// and turns leader election off; everything else is passed through, so
	// a test can add extenders, profiles and plugin args.
	SchedulerConfig *schedv1.KubeSchedulerConfiguration
	// NoScheduler leaves kube-scheduler stopped after Start; StartScheduler
	// starts it later.
	NoScheduler bool
	// Extra flags appended to each component's command line; later flags
	// win, so these override the harness defaults.
	EtcdArgs, APIServerArgs, SchedulerArgs, KwokArgs []string
	// StartTimeout bounds the wait for each component to become healthy
	// (default 60s).
	StartTimeout time.Duration
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// RealNode, when set, adds one real node (containerd, the kubelet)
	// and the controllers it needs; see RealNodeOptions.
	RealNode *RealNodeOptions
	// Controllers, when not empty, runs kube-controller-manager with only
	// these controllers (its --controllers names, e.g.
	// "resourceclaim-controller", which turns ResourceClaimTemplates into
	// claims and frees them when their pods go). A real node runs its own
	// set and ignores this.
	Controllers []string
}

// Cluster is a running control plane.
type Cluster struct {
	// Dir is the data folder; logs are under Dir/logs.
	Dir string
	// Kubeconfig is the path of an admin (system:masters) kubeconfig.
	Kubeconfig string
	// Config and Client are admin credentials for in-process use.
	Config *rest.Config
	Client kubernetes.Interface
	// APIServerURL is https://127.0.0.1:<port>.
	APIServerURL string
	// CAFile is the cluster CA, which signs the API server's certificate
	// and every client certificate; components serving TLS to the API
	// server can use IssueServingCert.
	CAFile string

	opts    Options
	bins    Binaries
	pki     *pki
	spawn   *spawner
	logDir  string
	tempDir bool

	mu       sync.Mutex
	procs    map[string]*process // by component name
	order    []string            // start order, for stopping in reverse
	schedCfg *schedv1.KubeSchedulerConfiguration
	schedKC  string
	schedURL string
	etcdURL  string

	realNode    *realNode
	kubeletArgs []string

	ctrlCancel context.CancelFunc
	ctrlDone   chan struct{}
	stopOnce   sync.Once
	stopErr    error
}

// Start brings a cluster up and returns when the API server is ready, kwok
// is managing nodes and (unless NoScheduler) kube-scheduler is healthy. On
// error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	var bins Binaries
	if opts.Binaries != nil {
		bins = *opts.Binaries
	} else if bins, err = FindBinaries(); err != nil {
		return nil, err
	}
	// Fail before starting anything when a binary is missing.
	for _, b := range []struct{ name, path string }{
		{"etcd", bins.Etcd}, {"kube-apiserver", bins.APIServer}, {"kube-scheduler", bins.Scheduler}, {"kwok", bins.Kwok},
	} {
		if err := checkExecutable(b.path); err != nil {
			return nil, fmt.Errorf("%s binary %w (run `make tools`)", b.name, err)
		}
	}
	c := &Cluster{opts: opts, bins: bins, procs: map[string]*process{}, schedCfg: opts.SchedulerConfig}
	if opts.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "vgpu-cluster-"); err != nil {
			return nil, err
		}
		c.tempDir = true
	} else {
		if c.Dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, err
		}
	}
	c.logDir = filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, err
	}
	c.spawn = newSpawner()
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if c.pki, err = newPKI(filepath.Join(c.Dir, "pki")); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	c.CAFile = c.pki.CAFile
	if opts.RealNode != nil {
		if err := c.prepareRealNode(); err != nil {
			return nil, fmt.Errorf("real node: %w", err)
		}
	}

	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx); err != nil {
		return nil, err
	}
	c.startControllers()
	if err := c.startKwok(ctx); err != nil {
		return nil, err
	}
	if !opts.NoScheduler {
		if err := c.StartScheduler(ctx); err != nil {
			return nil, err
		}
	}
	if len(opts.Controllers) > 0 && c.realNode == nil {
		if err := c.startControllerManager(ctx, strings.Join(opts.Controllers, ",")); err != nil {
			return nil, err
		}
	}
	if c.realNode != nil {
		if err := c.startRealNode(ctx); err != nil {
			return nil, fmt.Errorf("real node: %w", err)
		}
	}
	opts.Logf("cluster up in %s: KUBECONFIG=%s", c.Dir, c.Kubeconfig)
	return c, nil
}

// Stop stops every component in reverse start order (SIGTERM, then SIGKILL
// of its process group), the harness controllers, and removes the data
// folder when Start created it. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.ctrlCancel != nil {
			c.ctrlCancel()
			<-c.ctrlDone
		}
		c.mu.Lock()
		order := append([]string(nil), c.order...)
		c.mu.Unlock()
		for i := len(order) - 1; i >= 0; i-- {
			c.stopProcess(order[i])
		}
		c.spawn.close()
		if err := c.stopRealNode(); err != nil {
			c.stopErr = fmt.Errorf("real node: %w", err)
		}
		if left := ProcessesUsing(c.Dir); len(left) > 0 && c.stopErr == nil {
			c.stopErr = fmt.Errorf("processes still running after stop: %v", left)
		}
		if c.tempDir && c.stopErr == nil {
			c.stopErr = os.RemoveAll(c.Dir)
		}
	})
	return c.stopErr
}

// PIDs maps each running component to its process id.
func (c *Cluster) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.procs))
	for name, p := range c.procs {
		if p.running() {
			m[name] = p.pid()
		}
	}
	return m
}

// LogPath is the log file of a component ("etcd", "kube-apiserver",
// "kube-scheduler", "kwok", or a name given to StartProcess).
func (c *Cluster) LogPath(component string) string {
	return filepath.Join(c.logDir, component+".log")
}

func (c *Cluster) stopProcess(name string) {
	c.mu.Lock()
	p := c.procs[name]
	c.mu.Unlock()
	if p != nil {
		p.stop(10 * time.Second)
	}
}

// launch starts a component and records it for Stop.
func (c *Cluster) launch(name, bin string, args []string, env ...string) (*process, error) {
	c.mu.Lock()
	if old := c.procs[name]; old != nil && old.running() {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s is already running (pid %d)", name, old.pid())
	}
	c.mu.Unlock()
	if err := checkExecutable(bin); err != nil {
		return nil, fmt.Errorf("%s binary %w", name, err)
	}
	p, err := c.spawn.run(name, bin, args, c.logDir, env...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, seen := c.procs[name]; !seen {
		c.order = append(c.order, name)
	}
	c.procs[name] = p
	c.mu.Unlock()
	c.opts.Logf("started %s (pid %d), log %s", name, p.pid(), p.logPath)
	return p, nil
}

// waitHealthy polls check until it succeeds, the process exits (an error
// with the tail of its log) or StartTimeout passes.
func (c *Cluster) waitHealthy(ctx context.Context, p *process, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	var last error
	err := waitFor(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		select {
		case <-p.exited:
			return false, p.exitError()
		default:
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		last = check(cctx)
		return last == nil, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%s not healthy after %s: %v; last lines of %s:\n%s",
			p.name, c.opts.StartTimeout, last, p.logPath, tail(p.logPath, 20))
	}
	return err
}

// FreePorts reserves n distinct free loopback TCP ports. They are released
// before the components bind them; a component that loses the race exits
// with "address already in use", which Start reports with its log.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

var errNotReady = errors.New("not ready")
