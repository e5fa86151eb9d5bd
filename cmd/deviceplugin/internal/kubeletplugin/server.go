// Package kubeletplugin is the kubelet side of the device plugin: it serves
// the v1beta1 DevicePlugin API on a unix socket, registers it with the
// kubelet, and registers again whenever the kubelet restarts.
package kubeletplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/wait"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/containerspec"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/metrics"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/podresolver"
	"github.com/vgpu-io/vgpu/lib/contract"
)

// KubeletSocketName is the kubelet's registration socket in the socket dir.
const KubeletSocketName = "kubelet.sock"

// Config locates the plugin's sockets and host paths.
type Config struct {
	// SocketDir is the kubelet's device plugin directory.
	SocketDir string
	// SocketName is this plugin's socket in SocketDir.
	SocketName string
	Host       containerspec.Host
}

// Plugin serves the DevicePlugin API.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	cfg      Config
	state    *gpustate.State
	resolver *podresolver.Resolver
	metrics  *metrics.Metrics
	log      *zap.Logger

	// ctx ends when Run returns; streams and background work follow it.
	ctx context.Context

	mu     sync.Mutex
	server *grpc.Server
}

// New returns a plugin; Run serves it.
func New(cfg Config, state *gpustate.State, resolver *podresolver.Resolver, m *metrics.Metrics, log *zap.Logger) *Plugin {
	return &Plugin{cfg: cfg, state: state, resolver: resolver, metrics: m, log: log, ctx: context.Background()}
}

func (p *Plugin) kubeletSocket() string { return filepath.Join(p.cfg.SocketDir, KubeletSocketName) }
func (p *Plugin) socket() string        { return filepath.Join(p.cfg.SocketDir, p.cfg.SocketName) }

// Run serves until ctx ends. It registers when the kubelet's socket exists
// and again each time the kubelet recreates it (a kubelet restart wipes the
// plugin sockets and forgets its plugins).
func (p *Plugin) Run(ctx context.Context) error {
	p.ctx = ctx
	if err := os.MkdirAll(p.cfg.SocketDir, 0o755); err != nil {
		return fmt.Errorf("device plugin directory: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", p.cfg.SocketDir, err)
	}
	defer w.Close()
	if err := w.Add(p.cfg.SocketDir); err != nil {
		return fmt.Errorf("watch %s: %w", p.cfg.SocketDir, err)
	}
	defer p.stopServer()
	p.warnForeignDevices()

	if _, err := os.Stat(p.kubeletSocket()); err == nil {
		p.startAndRegister(ctx)
	} else {
		p.log.Info("waiting for the kubelet's registration socket", zap.String("path", p.kubeletSocket()))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("socket directory watch closed")
			}
			if ev.Name == p.kubeletSocket() && ev.Has(fsnotify.Create) {
				p.log.Info("kubelet socket created: registering", zap.String("path", ev.Name))
				// A started kubelet admits the pods already bound to it
				// oldest first, not in binding order.
				p.resolver.KubeletStarted()
				p.startAndRegister(ctx)
			}
			if ev.Name == p.kubeletSocket() && ev.Has(fsnotify.Remove) {
				p.log.Info("kubelet socket removed: waiting for the kubelet to come back")
				p.metrics.Registered.Set(0)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("socket directory watch closed")
			}
			p.log.Warn("socket directory watch", zap.Error(err))
		}
	}
}

// startAndRegister (re)starts the gRPC server on a fresh socket and
// registers it, retrying while the kubelet is unreachable. A kubelet that
// answers with an error has decided; the plugin does not insist.
func (p *Plugin) startAndRegister(ctx context.Context) {
	if err := p.startServer(); err != nil {
		p.log.Error("serving the device plugin socket", zap.String("path", p.socket()), zap.Error(err))
		return
	}
	// Tries from 100 ms doubling, at most 2 s apart, for about 50 s in all:
	// a kubelet that comes back is registered with within 2 s (doubling
	// without a cap left it waiting up to 25 s), and one that is still away
	// after that recreates its socket when it is back, which the socket
	// watch sees.
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Steps: 30, Cap: 2 * time.Second},
		func(ctx context.Context) (bool, error) {
			last = p.register(ctx)
			if last == nil {
				p.metrics.Registrations.WithLabelValues("ok").Inc()
				p.metrics.Registered.Set(1)
				p.log.Info("registered with the kubelet", zap.String("resource", contract.ResourceGPU), zap.String("endpoint", p.cfg.SocketName))
				return true, nil
			}
			if s, ok := status.FromError(last); ok && s.Code() != codes.Unavailable && s.Code() != codes.DeadlineExceeded {
				p.metrics.Registrations.WithLabelValues("rejected").Inc()
				p.log.Error("the kubelet rejected the registration; if another device plugin serves "+contract.ResourceGPU+
					" on this node (e.g. the GPU Operator's), disable it (see docs/deviceplugin.md); not retrying until the kubelet restarts",
					zap.String("resource", contract.ResourceGPU), zap.Error(last))
				return true, nil
			}
			p.metrics.Registrations.WithLabelValues("unreachable").Inc()
			return false, nil
		})
	if wait.Interrupted(err) && ctx.Err() == nil {
		p.log.Error("the kubelet is unreachable; waiting for it to recreate its socket", zap.Error(last))
	}
}

func (p *Plugin) register(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+p.kubeletSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.cfg.SocketName,
		ResourceName: contract.ResourceGPU,
		Options:      &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	return err
}

func (p *Plugin) startServer() error {
	p.stopServer()
	if err := os.Remove(p.socket()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", p.socket())
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(s, p)
	p.mu.Lock()
	p.server = s
	p.mu.Unlock()
	go func() {
		if err := s.Serve(l); err != nil {
			p.log.Warn("device plugin server stopped", zap.Error(err))
		}
	}()
	return nil
}

func (p *Plugin) stopServer() {
	p.mu.Lock()
	s := p.server
	p.server = nil
	p.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

// warnForeignDevices reads the kubelet's checkpoint for devices of our
// resource that another plugin registered (vgpu's ids contain "::").
func (p *Plugin) warnForeignDevices() {
	b, err := os.ReadFile(filepath.Join(p.cfg.SocketDir, "kubelet_internal_checkpoint"))
	if err != nil {
		return
	}
	var cp struct {
		Data struct {
			RegisteredDevices map[string][]string
		}
	}
	if json.Unmarshal(b, &cp) != nil {
		return
	}
	var foreign []string
	for _, id := range cp.Data.RegisteredDevices[contract.ResourceGPU] {
		if !strings.Contains(id, idSeparator) {
			foreign = append(foreign, id)
		}
	}
	if len(foreign) > 0 {
		p.log.Warn("another device plugin has served "+contract.ResourceGPU+" on this node (e.g. the GPU Operator's); "+
			"the kubelet keeps whichever plugin registered last, so disable the other one (see docs/deviceplugin.md)",
			zap.Strings("foreignDeviceIDs", foreign[:min(len(foreign), 4)]), zap.Int("count", len(foreign)))
	}
}

// GetDevicePluginOptions tells the kubelet to ask for preferred allocations.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the device list, then a new one after each change of
// health or split count.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	changed, cancel := p.state.Subscribe()
	defer cancel()
	var last []*pluginapi.Device
	for {
		devs := Devices(p.state.Snapshot())
		if !slices.EqualFunc(devs, last, sameDevice) {
			if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
				return err
			}
			last = devs
			healthy := 0
			for _, d := range devs {
				if d.Health == pluginapi.Healthy {
					healthy++
				}
			}
			p.metrics.AdvertisedDevices.WithLabelValues("healthy").Set(float64(healthy))
			p.metrics.AdvertisedDevices.WithLabelValues("unhealthy").Set(float64(len(devs) - healthy))
			p.log.Info("advertised devices to the kubelet", zap.Int("healthy", healthy), zap.Int("total", len(devs)))
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			p.log.Info("the kubelet closed the device stream; if the kubelet did not restart, another plugin may have registered " +
				contract.ResourceGPU + " and replaced this one")
			return nil
		case <-p.ctx.Done():
			return nil
		}
	}
}

func sameDevice(a, b *pluginapi.Device) bool {
	return a.ID == b.ID && a.Health == b.Health
}

// GetPreferredAllocation steers the kubelet to device ids on the GPUs the
// scheduler assigned to the container about to be allocated.
func (p *Plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		size := int(cr.AllocationSize)
		wanted := p.resolver.Preferred(size)
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{
			DeviceIDs: preferred(cr.AvailableDeviceIDs, cr.MustIncludeDeviceIDs, wanted, size),
		})
	}
	return resp, nil
}

// Allocate answers with the container contract of each container.
func (p *Plugin) Allocate(ctx context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		start := time.Now()
		c, err := p.allocate(ctx, cr.DevicesIds)
		p.metrics.AllocateSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			p.metrics.Allocations.WithLabelValues("error").Inc()
			p.log.Warn("allocate failed", zap.Strings("deviceIDs", cr.DevicesIds), zap.Error(err))
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		p.metrics.Allocations.WithLabelValues("ok").Inc()
		resp.ContainerResponses = append(resp.ContainerResponses, c)
	}
	return resp, nil
}

func (p *Plugin) allocate(ctx context.Context, ids []string) (*pluginapi.ContainerAllocateResponse, error) {
	t, err := p.resolver.Resolve(ctx, len(ids), uniqueGPUs(ids))
	if err != nil {
		return nil, err
	}
	sn := p.state.Snapshot()
	for _, d := range t.Container.Devices {
		if g, ok := sn.GPU(d.UUID); !ok {
			p.resolver.Reject(t)
			return nil, fmt.Errorf("pod %s/%s container %q: %s names GPU %s, which this node does not have",
				t.Pod.Namespace, t.Pod.Name, t.Container.Name, contract.AnnotationAssignment, d.UUID)
		} else if !g.Healthy {
			p.log.Warn("allocating a GPU that became unhealthy after scheduling", zap.String("gpu", d.UUID),
				zap.String("pod", t.Pod.Namespace+"/"+t.Pod.Name))
		}
	}
	// Build puts back a damaged libvgpu first (Host.Keeper).
	c, err := containerspec.Build(p.cfg.Host, string(t.Pod.UID), t.Container)
	if err != nil {
		p.resolver.Reject(t)
		return nil, fmt.Errorf("pod %s/%s container %q: %w", t.Pod.Namespace, t.Pod.Name, t.Container.Name, err)
	}
	// The container is served whether or not the record reaches the API
	// server now; Record retries in the background.
	_ = p.resolver.Record(ctx, p.ctx, t)
	p.log.Info("allocated", zap.String("pod", t.Pod.Namespace+"/"+t.Pod.Name), zap.String("container", t.Container.Name),
		zap.Bool("init", t.Container.Init), zap.String("devices", c.Envs[contract.EnvVisibleDevices]))
	return c, nil
}
