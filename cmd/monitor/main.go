// Command monitor is vgpu's node agent exporting per-GPU and per-container usage as Prometheus metrics.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	root := &cobra.Command{
		Use:           "monitor",
		Short:         "vgpu node agent exporting per-GPU and per-container usage as Prometheus metrics",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "monitor:", err)
		os.Exit(1)
	}
}
