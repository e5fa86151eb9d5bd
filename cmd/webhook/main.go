// Command webhook is vgpu's admission webhook that validates vGPU requests and routes GPU pods to the vgpu scheduler.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/vgpu-io/vgpu/lib/version"
)

func main() {
	root := &cobra.Command{
		Use:           "webhook",
		Short:         "vgpu admission webhook that validates vGPU requests and routes GPU pods to the vgpu scheduler",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
}
