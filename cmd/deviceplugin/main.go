// Command deviceplugin is vgpu's kubelet device plugin and node GPU inventory publisher.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	root := &cobra.Command{
		Use:           "deviceplugin",
		Short:         "vgpu kubelet device plugin and node GPU inventory publisher",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "deviceplugin:", err)
		os.Exit(1)
	}
}
