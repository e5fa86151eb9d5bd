package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

// RealNodeOptions ask for one real node beside the kwok ones: containerd, the
// real kubelet, kube-proxy and kube-controller-manager
// (docs/development.md#the-real-node).
type RealNodeOptions struct {
	// StateDir holds containerd's root and state, the CNI configuration and
	// the journal of host changes; it outlives the cluster so that the next
	// start can undo what a killed test left. Empty: <repo>/.cache/realnode.
	StateDir string
	// Name of the node (default "vgpu-real-node").
	Name string
	// Images are docker-archive or OCI tarballs imported into containerd's
	// k8s.io namespace before the kubelet starts; one of them must hold
	// PauseImage.
	Images []string
	// PauseImage is the pod sandbox image (no registry is reachable).
	PauseImage string
}

// PodSubnet is the real node's pod network (CNI bridge RealNodeBridge).
const (
	PodSubnet      = "10.88.0.0/16"
	RealNodeBridge = "vgpucni0"
	// lockFile makes one real node per machine: it owns /var/lib/kubelet.
	lockFile = "/run/lock/vgpu-realnode.lock"
)

// HostPaths are the host paths a real node writes outside its StateDir; Stop
// unmounts what is mounted under them and removes those that did not exist.
// /var/lib/kubelet/device-plugins is where device plugins find the kubelet,
// so the kubelet's root cannot move.
var HostPaths = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/netns", "/run/containerd", "/var/lib/vgpu", "/var/lib/cni"}

type realNode struct {
	opts     RealNodeOptions
	socket   string
	journal  string
	lock     *os.File
	hostIP   string
	ctrBin   string
	stopped  bool
	stateDir string
	// journaled: the journal was written, so stop must restore from it.
	journaled     bool
	kubeletClient certPair
}

var (
	httpClient     = &http.Client{Timeout: 5 * time.Second}
	insecureClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
)

// RealNodeUnavailable says in one line why this machine cannot run a real
// node ("" when it can): not root, a tool missing, a binary not built.
func RealNodeUnavailable() string {
	if os.Geteuid() != 0 {
		return "the real node needs root (containerd, the kubelet, iptables, mounts)"
	}
	for _, tool := range []string{"runc", "iptables", "iptables-save", "ip6tables-save", "ip", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "the real node needs " + tool + ": apt-get install runc iptables iproute2 conntrack containernetworking-plugins"
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return "the real node needs the CNI plugins in /usr/lib/cni: apt-get install containernetworking-plugins"
	}
	b, err := FindBinaries()
	if err != nil {
		return err.Error()
	}
	for _, p := range []string{b.Kubelet, b.ControllerManager, b.Proxy, filepath.Join(b.ContainerdDir, "containerd"), filepath.Join(b.ContainerdDir, "ctr"), filepath.Join(b.ContainerdDir, "containerd-shim-runc-v2")} {
		if err := checkExecutable(p); err != nil {
			return fmt.Sprintf("the real node needs %v: run make tools", err)
		}
	}
	return ""
}

// hostIP is the address of the interface of the default route: pods reach
// the API server there (through kube-proxy's rules for the kubernetes
// Service), and the API server reaches pods from it.
func hostIP() (string, error) {
	out, err := exec.Command("ip", "-4", "route", "get", "192.0.2.255").Output()
	if err == nil {
		f := strings.Fields(string(out))
		for i := range f {
			if f[i] == "src" && i+1 < len(f) {
				return f[i+1], nil
			}
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address for the API server and the kubelet")
}

// lockWait bounds how long a second real node waits for the first to stop:
// two checkouts testing on one machine queue instead of failing, and a
// forgotten node still fails the next run with its owner named.
const lockWait = 20 * time.Minute

// waitForLock takes the machine lock, waiting for another real node to stop.
func (c *Cluster) waitForLock(lf *os.File) error {
	deadline := time.Now().Add(lockWait)
	for logged := false; ; {
		err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		owner, _ := os.ReadFile(lockFile)
		if time.Now().After(deadline) {
			return fmt.Errorf("another real node runs on this machine (%s holds %s) and did not stop within %s", strings.TrimSpace(string(owner)), lockFile, lockWait)
		}
		if !logged {
			c.opts.Logf("waiting up to %s for another real node to stop (%s holds %s)", lockWait, strings.TrimSpace(string(owner)), lockFile)
			logged = true
		}
		time.Sleep(2 * time.Second)
	}
}

// prepareRealNode runs before the API server starts: it takes the machine
// lock, undoes what a killed earlier node left, and finds the host address
// the API server must serve on.
func (c *Cluster) prepareRealNode() error {
	o := *c.opts.RealNode
	if o.Name == "" {
		o.Name = "vgpu-real-node"
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(repoCache(), "realnode")
	}
	if why := RealNodeUnavailable(); why != "" {
		return errors.New(why)
	}
	r := &realNode{opts: o, stateDir: o.StateDir}
	if err := os.MkdirAll(r.stateDir, 0o755); err != nil {
		return err
	}
	r.socket = filepath.Join(r.stateDir, "containerd.sock")
	r.journal = filepath.Join(r.stateDir, "journal.json")
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	if err := c.waitForLock(lf); err != nil {
		lf.Close()
		return err
	}
	r.lock = lf
	// The journal of another checkout's node may be the one left over.
	prev, _ := os.ReadFile(lockFile)
	_ = lf.Truncate(0)
	_, _ = lf.WriteAt([]byte(fmt.Sprintf("pid %d journal %s\n", os.Getpid(), r.journal)), 0)
	for _, j := range journalsToRecover(string(prev), r.journal) {
		if found, err := recoverJournal(j); err != nil {
			r.unlock()
			return err
		} else if found {
			c.opts.Logf("restored the host from %s, left by a real node that did not stop", j)
		}
	}
	if r.hostIP, err = hostIP(); err != nil {
		r.unlock()
		return err
	}
	r.ctrBin = filepath.Join(c.bins.ContainerdDir, "ctr")
	if r.kubeletClient, err = c.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil); err != nil {
		r.unlock()
		return err
	}
	c.realNode = r
	return nil
}

func journalsToRecover(lockContent, own string) []string {
	out := []string{own}
	f := strings.Fields(lockContent)
	for i := range f {
		if f[i] == "journal" && i+1 < len(f) && f[i+1] != own {
			out = append(out, f[i+1])
		}
	}
	return out
}

func (r *realNode) unlock() {
	if r.lock != nil {
		_ = r.lock.Truncate(0)
		_ = syscall.Flock(int(r.lock.Fd()), syscall.LOCK_UN)
		r.lock.Close()
		r.lock = nil
	}
}

// apiServerArgs make the API server reachable from pods: served on every
// address, advertised on the host's (the endpoint of the kubernetes
// Service), and calling webhooks at their endpoints' pod IPs, as there is no
// Service routing on the host itself.
func (r *realNode) apiServerArgs() []string {
	return []string{
		"--bind-address=0.0.0.0",
		"--advertise-address=" + r.hostIP,
		"--endpoint-reconciler-type=lease",
		"--enable-aggregator-routing=true",
		"--kubelet-client-certificate=" + r.kubeletClient.CertFile,
		"--kubelet-client-key=" + r.kubeletClient.KeyFile,
		"--kubelet-preferred-address-types=InternalIP",
	}
}

// servingHosts are the API server certificate's extra names.
func (r *realNode) servingHosts() []string { return []string{r.hostIP, "10.96.0.1"} }

// RealNodeName is the real node's name, "" without one.
func (c *Cluster) RealNodeName() string {
	if c.realNode == nil {
		return ""
	}
	return c.realNode.opts.Name
}

// Ctr runs containerd's ctr against the real node's containerd in the k8s.io
// namespace and returns its standard output.
func (c *Cluster) Ctr(ctx context.Context, args ...string) (string, error) {
	if c.realNode == nil {
		return "", errors.New("no real node")
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, c.realNode.ctrBin, append([]string{"--address", c.realNode.socket, "--namespace", "k8s.io"}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// startRealNode starts containerd, imports the images, and starts
// kube-controller-manager, kube-proxy and the kubelet, then waits for the
// node to be Ready. The host state is journaled before anything changes.
func (c *Cluster) startRealNode(ctx context.Context) error {
	r := c.realNode
	// The state folder is listed so that its mounts (snapshots, shm) go
	// too; it existed before, so it stays, with the imported images.
	paths := append(append([]string(nil), HostPaths...), r.stateDir)
	before, err := snapshotHost(paths)
	if err != nil {
		return fmt.Errorf("host state: %w", err)
	}
	if err := writeJournal(r.journal, journal{Before: before, Paths: paths, Socket: r.socket}); err != nil {
		return err
	}
	r.journaled = true
	if err := c.startContainerd(ctx); err != nil {
		return err
	}
	for _, img := range r.opts.Images {
		if _, err := c.Ctr(ctx, "images", "import", "--no-unpack=false", img); err != nil {
			return err
		}
	}
	// kwok nodes keep no heartbeat the node lifecycle controller accepts;
	// it would taint and evict them.
	if err := c.startControllerManager(ctx, "*,-node-lifecycle-controller,-node-ipam-controller"); err != nil {
		return err
	}
	if err := c.startKubeProxy(ctx); err != nil {
		return err
	}
	if err := c.startKubelet(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	if err := c.WaitForNodesReady(wctx, r.opts.Name); err != nil {
		return fmt.Errorf("real node %s not Ready: %w; last lines of %s:\n%s", r.opts.Name, err, c.LogPath("kubelet"), tail(c.LogPath("kubelet"), 20))
	}
	return nil
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	r := c.realNode
	cniDir := filepath.Join(r.stateDir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "vgpu-test", "plugins": [
 {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
 {"type": "portmap", "capabilities": {"portMappings": true}}]}`, RealNodeBridge, PodSubnet, filepath.Join(r.stateDir, "cni-ipam"))
	if err := os.WriteFile(filepath.Join(cniDir, "10-vgpu.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	// restrict_oom_score_adj: root here may lack CAP_SYS_RESOURCE, and runc
	// would fail to lower the sandbox's oom_score_adj ("can't get final
	// child's PID from pipe"). A test machine setting, not for users.
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  cdi_spec_dirs = [%q]
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "runc"
      Root = %q
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
`, filepath.Join(r.stateDir, "root"), filepath.Join(r.stateDir, "state"), r.socket, r.socket+".ttrpc",
		filepath.Join(r.stateDir, "cdi"), filepath.Join(r.stateDir, "runc"), cniDir, r.opts.PauseImage)
	cfgPath := filepath.Join(r.stateDir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	_ = os.Remove(r.socket)
	// containerd starts containerd-shim-runc-v2 from PATH.
	p, err := c.launch("containerd", filepath.Join(c.bins.ContainerdDir, "containerd"), []string{"--config", cfgPath},
		"PATH="+c.bins.ContainerdDir+":"+os.Getenv("PATH"))
	if err != nil {
		return err
	}
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := c.Ctr(ctx, "version")
		return err
	})
}

// startControllerManager runs kube-controller-manager with controllers (its
// --controllers value).
func (c *Cluster) startControllerManager(ctx context.Context, controllers string) error {
	kc, err := c.UserKubeconfig("kube-controller-manager", "system:kube-controller-manager", "system:masters")
	if err != nil {
		return err
	}
	saKey, _, err := c.pki.serviceAccountKey()
	if err != nil {
		return err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--leader-elect=false",
		"--controllers=" + controllers,
		// The default 20 QPS would make a burst of claim pods wait on the
		// controller's own client (two writes per pod: claim, pod status).
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--root-ca-file=" + c.pki.CAFile,
		"--service-account-private-key-file=" + saKey,
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[0]),
	}
	p, err := c.launch("kube-controller-manager", c.bins.ControllerManager, args)
	if err != nil {
		return err
	}
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := httpGet(ctx, insecureClient, "https://"+hostPort(ports[0])+"/healthz")
		return err
	})
}

func (c *Cluster) startKubeProxy(ctx context.Context) error {
	r := c.realNode
	kc, err := c.UserKubeconfig("kube-proxy", "system:kube-proxy", "system:masters")
	if err != nil {
		return err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kc,
		"--hostname-override=" + r.opts.Name,
		"--proxy-mode=iptables",
		"--cluster-cidr=" + PodSubnet,
		fmt.Sprintf("--healthz-bind-address=127.0.0.1:%d", ports[0]),
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", ports[1]),
		// Leave the host's conntrack table sizes and timeouts alone.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--iptables-localhost-nodeports=false",
	}
	p, err := c.launch("kube-proxy", c.bins.Proxy, args)
	if err != nil {
		return err
	}
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := httpGet(ctx, httpClient, "http://"+hostPort(ports[0])+"/livez")
		return err
	})
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	r := c.realNode
	kc, err := c.UserKubeconfig("kubelet", "system:node:"+r.opts.Name, "system:nodes", "system:masters")
	if err != nil {
		return err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return err
	}
	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"cgroupDriver":             "cgroupfs",
		"failCgroupV1":             false,
		"failSwapOn":               false,
		"address":                  r.hostIP,
		"port":                     ports[0],
		"readOnlyPort":             0,
		"healthzPort":              ports[1],
		"healthzBindAddress":       "127.0.0.1",
		"containerRuntimeEndpoint": "unix://" + r.socket,
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": c.pki.CAFile},
		},
		"authorization": map[string]any{"mode": "AlwaysAllow"},
		// A shared test machine: evict nothing, collect no images.
		"evictionHard":                map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"serializeImagePulls":         false,
		"resolvConf":                  "/etc/resolv.conf",
		"nodeStatusUpdateFrequency":   "2s",
		"syncFrequency":               "5s",
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return err
	}
	args := []string{
		"--config=" + cfgPath,
		"--kubeconfig=" + kc,
		"--hostname-override=" + r.opts.Name,
		"--node-ip=" + r.hostIP,
		"--root-dir=/var/lib/kubelet",
		"--v=2",
	}
	c.kubeletArgs = args
	p, err := c.launch("kubelet", c.bins.Kubelet, args)
	if err != nil {
		return err
	}
	return c.waitHealthy(ctx, p, func(ctx context.Context) error {
		_, err := httpGet(ctx, httpClient, "http://"+hostPort(ports[1])+"/healthz")
		return err
	})
}

// RestartKubelet stops the kubelet and starts it again with the same
// configuration; running containers keep running.
func (c *Cluster) RestartKubelet(ctx context.Context) error {
	if c.realNode == nil {
		return errors.New("no real node")
	}
	c.stopProcess("kubelet")
	p, err := c.launch("kubelet", c.bins.Kubelet, c.kubeletArgs)
	if err != nil {
		return err
	}
	_ = p
	wctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	return c.WaitForNodesReady(wctx, c.realNode.opts.Name)
}

// stopRealNode runs after every process of the cluster stopped: it kills
// what containerd left running (shims, containers), restores the host from
// the journal and releases the machine lock.
func (c *Cluster) stopRealNode() error {
	r := c.realNode
	if r == nil || r.stopped {
		return nil
	}
	r.stopped = true
	defer r.unlock()
	if !r.journaled {
		return nil
	}
	found, err := recoverJournal(r.journal)
	if err == nil && !found {
		err = fmt.Errorf("journal %s is gone: the host was not restored", r.journal)
	}
	return err
}

// Kubectl runs the pinned kubectl as the cluster's admin, as a user would,
// and returns its combined output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bins.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+c.logDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
