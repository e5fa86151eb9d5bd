// Package assign describes which GPUs, and how much of each, the scheduler
// gave to the containers of one pod.
package assign

import (
	"fmt"
	"strings"
)

// Device is one vGPU handed to a container: a share of one physical GPU.
type Device struct {
	UUID      string `json:"uuid"`
	MemoryMiB int64  `json:"memoryMiB"`
	// Cores is the SM share in percent, 1–100. 100 means the GPU is the
	// container's alone (exclusive). 0 means no limit on a shared GPU.
	Cores int `json:"cores"`
}

// RunsWithApp reports whether the container runs beside the app containers:
// an app container or a sidecar.
func (c *Container) RunsWithApp() bool { return !c.Init || c.Sidecar }

// Container is what one container of the pod was given.
type Container struct {
	Name string `json:"name"`
	Init bool   `json:"init,omitempty"`
	// Sidecar is set, with Init, for a restartable init container: it runs
	// beside the app containers and the init containers after it, so its
	// share is booked in addition to theirs (docs/contract.md). Absent in
	// older annotations, which then book it as an ordinary init container.
	Sidecar bool     `json:"sidecar,omitempty"`
	Devices []Device `json:"devices"`
}

// Pod is the assignment of one pod, written at bind.
type Pod struct {
	// Node is the node the GPUs belong to; it is set before the Binding exists.
	Node       string      `json:"node"`
	Containers []Container `json:"containers"`
}

// Container returns the assignment of the named container, if any.
func (p *Pod) Container(name string, init bool) (*Container, bool) {
	for i := range p.Containers {
		if p.Containers[i].Name == name && p.Containers[i].Init == init {
			return &p.Containers[i], true
		}
	}
	return nil, false
}

// Validate checks the invariants a decoded assignment must hold.
func (p *Pod) Validate() error {
	if strings.TrimSpace(p.Node) == "" {
		return fmt.Errorf("node is empty")
	}
	for i, c := range p.Containers {
		if c.Name == "" {
			return fmt.Errorf("containers[%d]: name is empty", i)
		}
		if c.Sidecar && !c.Init {
			return fmt.Errorf("container %q: sidecar is true but init is not: a sidecar is an init container", c.Name)
		}
		seen := make(map[string]bool, len(c.Devices))
		for j, d := range c.Devices {
			if d.UUID == "" {
				return fmt.Errorf("container %q: devices[%d]: uuid is empty", c.Name, j)
			}
			if seen[d.UUID] {
				return fmt.Errorf("container %q: devices[%d]: uuid %s given twice", c.Name, j, d.UUID)
			}
			seen[d.UUID] = true
			if d.MemoryMiB <= 0 {
				return fmt.Errorf("container %q: device %s: memoryMiB %d: must be positive", c.Name, d.UUID, d.MemoryMiB)
			}
			if d.Cores < 0 || d.Cores > 100 {
				return fmt.Errorf("container %q: device %s: cores %d: must be 0-100", c.Name, d.UUID, d.Cores)
			}
		}
	}
	return nil
}
