// Command vgpuctl shows how a cluster's GPUs are shared and simulates placement.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/describe"
	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/simulate"
	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/versioncmd"
	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	root := &cobra.Command{
		Use:           "vgpuctl",
		Short:         "Show and simulate fractional GPU placement",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Each subcommand lives in its own internal/<name> package.
	root.AddCommand(simulate.NewCommand())
	root.AddCommand(describe.NewCommand())
	root.AddCommand(versioncmd.NewCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vgpuctl:", err)
		os.Exit(1)
	}
}
