// Package device describes the GPUs of a node as the scheduler sees them.
package device

import (
	"fmt"
	"strings"
)

// GPU is one physical GPU of a node.
type GPU struct {
	UUID      string `json:"uuid"`
	Index     int    `json:"index"`
	Model     string `json:"model"`
	MemoryMiB int64  `json:"memoryMiB"`
	// NUMANode is the host NUMA node of the GPU's PCI device, -1 when unknown.
	NUMANode int  `json:"numaNode"`
	Healthy  bool `json:"healthy"`
}

// Inventory is everything the scheduler needs to know about a node's GPUs:
// the GPUs themselves and the sharing settings the node's device plugin
// enforces (they can lag the cluster settings until the plugin catches up).
type Inventory struct {
	GPUs []GPU `json:"gpus"`
	// SplitCount is the most vGPUs one GPU is shared by.
	SplitCount int `json:"splitCount"`
	// MemoryScaling > 1 lets more memory be handed out than a GPU has.
	MemoryScaling float64 `json:"memoryScaling"`
}

// Validate checks the invariants a decoded inventory must hold.
func (inv *Inventory) Validate() error {
	if inv.SplitCount < 1 {
		return fmt.Errorf("splitCount %d: must be at least 1", inv.SplitCount)
	}
	if inv.MemoryScaling < 1 {
		return fmt.Errorf("memoryScaling %g: must be at least 1", inv.MemoryScaling)
	}
	seen := make(map[string]bool, len(inv.GPUs))
	for i, g := range inv.GPUs {
		if strings.TrimSpace(g.UUID) == "" {
			return fmt.Errorf("gpus[%d]: uuid is empty", i)
		}
		if seen[g.UUID] {
			return fmt.Errorf("gpus[%d]: duplicate uuid %q", i, g.UUID)
		}
		seen[g.UUID] = true
		if g.MemoryMiB <= 0 {
			return fmt.Errorf("gpus[%d] (%s): memoryMiB %d: must be positive", i, g.UUID, g.MemoryMiB)
		}
		if g.Index < 0 {
			return fmt.Errorf("gpus[%d] (%s): index %d: must not be negative", i, g.UUID, g.Index)
		}
	}
	return nil
}

// HealthyCount is the number of healthy GPUs.
func (inv *Inventory) HealthyCount() int {
	n := 0
	for _, g := range inv.GPUs {
		if g.Healthy {
			n++
		}
	}
	return n
}
