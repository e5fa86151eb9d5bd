// Package version carries the build's version, set by the Makefile with
// -ldflags "-X github.com/vgpu-io/vgpu/lib/version.Version=…".
package version

// Version is the vgpu release this binary belongs to.
var Version = "dev"
