// Package draprepare is the node agent's answer to the kubelet's DRA calls
// (docs/dra.md#preparing-a-claim): prepare turns each allocated claim into
// one CDI device per request whose container edits carry the container
// contract (docs/contract.md), unprepare removes them.
//
// It keeps no state in memory: everything of a claim on the host is named
// by the claim's uid (the CDI spec file, the region directories and limits
// files), so an unprepare after a node-agent restart finds it all.
package draprepare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/containerspec"
	"github.com/vgpu-io/vgpu/cmd/deviceplugin/internal/gpustate"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
)

// CDI names of vgpu's devices: "vgpu.io/gpu=<claim uid>-<request>".
const (
	CDIVendor  = "vgpu.io"
	CDIClass   = "gpu"
	CDIKind    = CDIVendor + "/" + CDIClass
	cdiVersion = "0.6.0"
)

// Driver prepares and unprepares claims of vgpu's DRA driver on one node.
type Driver struct {
	// Node is the pool of this node's ResourceSlice.
	Node string
	// Host.ContainersDir holds the claims' region directories
	// (contract.HostClaimsDir), Host.LibDir the installed libvgpu.
	Host containerspec.Host
	// CDIDir is where the CDI spec files go (the runtime's CDI directory).
	CDIDir string
	State  *gpustate.State
	Log    *zap.Logger
	// Fatal receives an error the DRA service cannot recover from; the
	// node agent then exits rather than run on without it.
	Fatal chan<- error
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// specPath is the CDI spec file of one claim.
func (d *Driver) specPath(claim types.UID) string {
	return filepath.Join(d.CDIDir, CDIVendor+"-"+CDIClass+"_"+string(claim)+".json")
}

// PrepareResourceClaims implements kubeletplugin.DRAPlugin. Preparing a
// claim again rewrites the same files and returns the same devices; a
// region that exists keeps its ledger.
func (d *Driver) PrepareResourceClaims(_ context.Context, claims []*resourcev1.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	for _, c := range claims {
		devs, err := d.prepare(c)
		if err != nil {
			d.Log.Warn("prepare failed", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("uid", string(c.UID)), zap.Error(err))
			out[c.UID] = kubeletplugin.PrepareResult{Err: err}
			continue
		}
		d.Log.Info("prepared", zap.String("claim", c.Namespace+"/"+c.Name), zap.String("uid", string(c.UID)), zap.Int("devices", len(devs)))
		out[c.UID] = kubeletplugin.PrepareResult{Devices: devs}
	}
	return out, nil
}

func (d *Driver) prepare(c *resourcev1.ResourceClaim) ([]kubeletplugin.Device, error) {
	sn := d.State.Snapshot()
	shares, err := dra.Shares(c, func(pool, device string) (dra.GPU, bool) {
		if pool != d.Node {
			return dra.GPU{}, false
		}
		for _, g := range sn.GPUs {
			if dra.DeviceName(g.Index) == device {
				if !g.Healthy {
					// Allocated before its taint kept new claims off it;
					// served as Allocate serves it (docs/dra.md).
					d.Log.Warn("preparing a claim on a GPU that became unhealthy after allocation",
						zap.String("claim", c.Namespace+"/"+c.Name), zap.String("gpu", g.UUID))
				}
				return dra.GPU{UUID: g.UUID, MemoryMiB: g.MemoryMiB}, true
			}
		}
		return dra.GPU{}, false
	})
	if err != nil {
		return nil, err
	}
	spec := cdispec.Spec{Version: cdiVersion, Kind: CDIKind,
		Annotations: map[string]string{"vgpu.io/claim": c.Namespace + "/" + c.Name}}
	var devs []kubeletplugin.Device
	for _, s := range shares {
		cs, err := containerspec.Prepare(d.Host, contract.ClaimDirName(string(c.UID), s.Request), s.Devices)
		if err != nil {
			return nil, fmt.Errorf("claim %s/%s request %q: %w", c.Namespace, c.Name, s.Request, err)
		}
		name := string(c.UID) + "-" + s.Request
		spec.Devices = append(spec.Devices, cdispec.Device{Name: name, ContainerEdits: edits(cs)})
		for i, r := range s.Results {
			dev := kubeletplugin.Device{Requests: []string{r.Request}, PoolName: r.Pool, DeviceName: r.Device, ShareID: r.ShareID}
			// One CDI device carries the whole request's contract (all
			// its GPUs, as one container's); naming it once is enough.
			if i == 0 {
				dev.CDIDeviceIDs = []string{CDIKind + "=" + name}
			}
			devs = append(devs, dev)
		}
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("claim %s/%s: no device of driver %s is allocated to it", c.Namespace, c.Name, dra.Driver)
	}
	raw, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.CDIDir, 0o755); err != nil {
		return nil, fmt.Errorf("CDI directory: %w", err)
	}
	// Written last: the runtime may read it as soon as it exists, and
	// every host path it names exists by now.
	if err := containerspec.WriteFile(d.specPath(c.UID), raw, 0o644); err != nil {
		return nil, fmt.Errorf("CDI spec %s: %w", d.specPath(c.UID), err)
	}
	return devs, nil
}

// edits translates the contract into CDI container edits, env sorted so
// the file is the same every time.
func edits(s containerspec.Spec) cdispec.ContainerEdits {
	var e cdispec.ContainerEdits
	for k, v := range s.Env {
		e.Env = append(e.Env, k+"="+v)
	}
	sort.Strings(e.Env)
	for _, m := range s.Mounts {
		opts := []string{"rbind", "rw"}
		if m.ReadOnly {
			opts = []string{"rbind", "ro", "nosuid", "nodev"}
		}
		e.Mounts = append(e.Mounts, &cdispec.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, Type: "bind", Options: opts})
	}
	return e
}

// UnprepareResourceClaims implements kubeletplugin.DRAPlugin: it removes
// the claim's CDI spec, region directories and limits files, found by the
// claim's uid alone. A claim that was never prepared, or is already gone,
// is not an error.
func (d *Driver) UnprepareResourceClaims(_ context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	out := make(map[types.UID]error, len(claims))
	for _, c := range claims {
		out[c.UID] = d.unprepare(c.UID)
		if out[c.UID] != nil {
			d.Log.Warn("unprepare failed", zap.String("claim", c.String()), zap.String("uid", string(c.UID)), zap.Error(out[c.UID]))
		} else {
			d.Log.Info("unprepared", zap.String("claim", c.String()), zap.String("uid", string(c.UID)))
		}
	}
	return out, nil
}

func (d *Driver) unprepare(uid types.UID) error {
	if uid == "" || strings.ContainsAny(string(uid), "/_*?[") {
		return fmt.Errorf("claim uid %q: not a uid", uid)
	}
	// The spec goes first: the runtime must not start a container whose
	// mounts are being removed.
	if err := os.Remove(d.specPath(uid)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove CDI spec: %w", err)
	}
	dirs, err := filepath.Glob(filepath.Join(d.Host.ContainersDir, contract.ClaimDirName(string(uid), "*")))
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		name := strings.TrimSuffix(filepath.Base(dir), contract.HostLimitsSuffix)
		if err := containerspec.Remove(d.Host, name); err != nil {
			return err
		}
	}
	return nil
}

// HandleError implements kubeletplugin.DRAPlugin: the helper publishes no
// slices for vgpu (draslice does), so what reaches here is the gRPC
// servers'; a failure it cannot recover from goes to Fatal.
func (d *Driver) HandleError(_ context.Context, err error, msg string) {
	d.Log.Error(msg, zap.Error(err))
	if !errors.Is(err, kubeletplugin.ErrRecoverable) && d.Fatal != nil {
		select {
		case d.Fatal <- fmt.Errorf("%s: %w", msg, err):
		default:
		}
	}
}

// WatchHealthStatus implements kubeletplugin.DRAPlugin: device health
// reaches the scheduler as a device taint on the slice instead
// (docs/dra.md#what-the-node-agent-publishes).
func (d *Driver) WatchHealthStatus(context.Context, chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}
