// Command extender is vgpu's kube-scheduler extender: GPU-aware filter, prioritize and bind.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	root := &cobra.Command{
		Use:           "extender",
		Short:         "vgpu kube-scheduler extender: GPU-aware filter, prioritize and bind",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "extender:", err)
		os.Exit(1)
	}
}
