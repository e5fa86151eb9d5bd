// Package testkubelet is the kubelet side of the device plugin API, for
// tests: a registration server on kubelet.sock and, for each registered
// plugin, a client that follows ListAndWatch and allocates devices the way
// the kubelet's device manager does (preferred allocation first, then
// Allocate with the ids it settled on).
package testkubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Kubelet serves kubelet.sock in Dir.
type Kubelet struct {
	pluginapi.UnimplementedRegistrationServer

	Dir      string
	Resource string
	// Reject, when set, is the error Register answers with, as a kubelet
	// does for a request it refuses.
	Reject string

	srv *grpc.Server

	mu       sync.Mutex
	changed  chan struct{}
	attempts int
	// registered counts the registrations that succeeded; failures says
	// why the others did not, for a test that reports them.
	registered int
	failures   []string
	plugin     *Plugin
}

// Start serves a kubelet registration socket in dir for resource.
func Start(dir, resource string) (*Kubelet, error) {
	k := &Kubelet{Dir: dir, Resource: resource, changed: make(chan struct{})}
	l, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		return nil, err
	}
	k.srv = grpc.NewServer()
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(l) }()
	return k, nil
}

// Stop shuts the kubelet down the way a kubelet restart looks to a plugin:
// its connections drop, kubelet.sock and the plugin sockets disappear.
func (k *Kubelet) Stop() {
	k.srv.Stop()
	k.mu.Lock()
	if k.plugin != nil {
		k.plugin.close()
	}
	k.mu.Unlock()
	entries, _ := os.ReadDir(k.Dir)
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			_ = os.Remove(filepath.Join(k.Dir, e.Name()))
		}
	}
}

// Attempts is the number of Register calls received.
func (k *Kubelet) Attempts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.attempts
}

// Register validates the request like the kubelet and connects back.
func (k *Kubelet) Register(ctx context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	out, err := k.register(ctx, r)
	k.mu.Lock()
	if err != nil {
		k.failures = append(k.failures, err.Error())
	} else {
		k.registered++
	}
	k.mu.Unlock()
	return out, err
}

// Registrations is the number of Register calls that succeeded.
func (k *Kubelet) Registrations() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.registered
}

// Failures says why each Register call that failed did.
func (k *Kubelet) Failures() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.failures...)
}

func (k *Kubelet) register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.mu.Lock()
	k.attempts++
	k.notifyLocked()
	k.mu.Unlock()
	if k.Reject != "" {
		return nil, status.Error(codes.AlreadyExists, k.Reject)
	}
	if r.Version != pluginapi.Version {
		return nil, fmt.Errorf("version %q not supported", r.Version)
	}
	if r.ResourceName != k.Resource {
		return nil, fmt.Errorf("resource %q: this kubelet serves %q", r.ResourceName, k.Resource)
	}
	if r.Options == nil || !r.Options.GetPreferredAllocationAvailable {
		return nil, errors.New("test kubelet expects GetPreferredAllocationAvailable")
	}
	p, err := connect(filepath.Join(k.Dir, r.Endpoint), func() {
		k.mu.Lock()
		k.notifyLocked()
		k.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	if k.plugin != nil {
		k.plugin.close()
	}
	k.plugin = p
	k.notifyLocked()
	k.mu.Unlock()
	return &pluginapi.Empty{}, nil
}

func (k *Kubelet) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

// WaitPlugin waits for a registered plugin whose device list satisfies ok.
func (k *Kubelet) WaitPlugin(ctx context.Context, ok func(devs []*pluginapi.Device) bool) (*Plugin, error) {
	for {
		k.mu.Lock()
		p, ch := k.plugin, k.changed
		k.mu.Unlock()
		if p != nil {
			if devs := p.Devices(); devs != nil && ok(devs) {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			var last []*pluginapi.Device
			if p != nil {
				last = p.Devices()
			}
			return nil, fmt.Errorf("waiting for the plugin's devices: %w (last list: %d devices, %d healthy)", ctx.Err(), len(last), Healthy(last))
		case <-ch:
		}
	}
}

// WaitAttempts waits until Register was called n times.
func (k *Kubelet) WaitAttempts(ctx context.Context, n int) error {
	for {
		k.mu.Lock()
		got, ch := k.attempts, k.changed
		k.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d registrations, got %d: %w", n, got, ctx.Err())
		case <-ch:
		}
	}
}

// Healthy counts healthy devices.
func Healthy(devs []*pluginapi.Device) int {
	n := 0
	for _, d := range devs {
		if d.Health == pluginapi.Healthy {
			n++
		}
	}
	return n
}

// Plugin is the kubelet's connection to one registered plugin.
type Plugin struct {
	conn   *grpc.ClientConn
	Client pluginapi.DevicePluginClient
	cancel context.CancelFunc

	mu        sync.Mutex
	devices   []*pluginapi.Device
	allocated map[string]bool
}

func connect(socket string, changed func()) (*Plugin, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Plugin{conn: conn, Client: pluginapi.NewDevicePluginClient(conn), cancel: cancel, allocated: map[string]bool{}}
	opts, err := p.Client.GetDevicePluginOptions(ctx, &pluginapi.Empty{})
	if err != nil {
		p.close()
		return nil, fmt.Errorf("GetDevicePluginOptions: %w", err)
	}
	if !opts.GetPreferredAllocationAvailable {
		p.close()
		return nil, errors.New("plugin does not offer GetPreferredAllocation")
	}
	stream, err := p.Client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		p.close()
		return nil, fmt.Errorf("ListAndWatch: %w", err)
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.devices = resp.Devices
			p.mu.Unlock()
			changed()
		}
	}()
	return p, nil
}

func (p *Plugin) close() {
	p.cancel()
	_ = p.conn.Close()
}

// Devices is the last device list the plugin sent.
func (p *Plugin) Devices() []*pluginapi.Device {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.devices
}

// AllocateContainer does what the device manager does for one container
// asking for n devices: pick n free healthy ids, preferring the plugin's
// choice, and call Allocate with them. The ids stay allocated.
func (p *Plugin) AllocateContainer(ctx context.Context, n int) (*pluginapi.ContainerAllocateResponse, []string, error) {
	return p.allocate(ctx, n, nil)
}

// allocate takes the container's ids from reusable (ids of the pod's init
// containers, sorted) first, as the device manager does: when they are
// enough it asks no preference, otherwise it asks one that must include
// them.
func (p *Plugin) allocate(ctx context.Context, n int, reusable []string) (*pluginapi.ContainerAllocateResponse, []string, error) {
	reused := reusable[:min(n, len(reusable))]
	ids := slices.Clone(reused)
	if len(ids) < n {
		p.mu.Lock()
		available := slices.Clone(reused)
		for _, d := range p.devices {
			if d.Health == pluginapi.Healthy && !p.allocated[d.ID] {
				available = append(available, d.ID)
			}
		}
		p.mu.Unlock()
		if len(available) < n {
			return nil, nil, fmt.Errorf("only %d of %d devices free", len(available), n)
		}
		pref, err := p.Client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{
			ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{
				AvailableDeviceIDs: available, MustIncludeDeviceIDs: reused, AllocationSize: int32(n)}},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("GetPreferredAllocation: %w", err)
		}
		ids = available[:n]
		// The kubelet uses the preference only if it is valid.
		if got := pref.ContainerResponses[0].DeviceIDs; len(got) == n && subset(got, available) && subset(reused, got) {
			ids = got
		}
	}
	resp, err := p.Client.Allocate(ctx, &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}},
	})
	if err != nil {
		return nil, ids, err
	}
	p.mu.Lock()
	for _, id := range ids {
		p.allocated[id] = true
	}
	p.mu.Unlock()
	return resp.ContainerResponses[0], ids, nil
}

func subset(ids, of []string) bool {
	seen := map[string]bool{}
	for _, id := range ids {
		if !slices.Contains(of, id) || seen[id] {
			return false
		}
		seen[id] = true
	}
	return true
}

// Admission is the outcome of admitting one pod.
type Admission struct {
	// Responses by container name, init containers prefixed "init:".
	Responses map[string]*pluginapi.ContainerAllocateResponse
	IDs       map[string][]string
	// Reused names the containers given an init container's ids again.
	Reused map[string]bool
}

// Admit allocates the pod's containers that ask for resource, init
// containers first, in spec order, stopping at the first error as the
// kubelet's admission does. As in the kubelet's device manager, the ids of
// a (non-sidecar) init container are given again to the containers after
// it, each id to one app container at most.
func (p *Plugin) Admit(ctx context.Context, pod *corev1.Pod, resource string) (*Admission, error) {
	a := &Admission{Responses: map[string]*pluginapi.ContainerAllocateResponse{}, IDs: map[string][]string{}, Reused: map[string]bool{}}
	reusable := map[string]bool{}
	step := func(key string, c corev1.Container, init bool) error {
		q, ok := c.Resources.Limits[corev1.ResourceName(resource)]
		if !ok || q.Value() == 0 {
			return nil
		}
		pool := make([]string, 0, len(reusable))
		for id := range reusable {
			pool = append(pool, id)
		}
		slices.Sort(pool)
		resp, ids, err := p.allocate(ctx, int(q.Value()), pool)
		if err != nil {
			return fmt.Errorf("pod %s container %s: %w", pod.Name, c.Name, err)
		}
		a.Responses[key] = resp
		a.IDs[key] = ids
		a.Reused[key] = len(pool) > 0
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		for _, id := range ids {
			if init && !sidecar {
				reusable[id] = true
			} else {
				delete(reusable, id)
			}
		}
		return nil
	}
	for _, c := range pod.Spec.InitContainers {
		if err := step("init:"+c.Name, c, true); err != nil {
			return a, err
		}
	}
	for _, c := range pod.Spec.Containers {
		if err := step(c.Name, c, false); err != nil {
			return a, err
		}
	}
	return a, nil
}
