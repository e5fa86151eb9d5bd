// Package internal is the root of code that vgpu's binaries and tests share
// but that is not GPU accounting (lib): it may do I/O and load NVML. Go's
// internal rule keeps it to modules under github.com/vgpu-io/vgpu. See
// docs/architecture.md.
package internal
