// Package daemoncmd is the command line every vgpu daemon starts from: a
// cobra root command with --version, no arguments, --log-level, a logger, a
// context that ends at SIGINT or SIGTERM, and one way to report a failure.
package daemoncmd

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/vgpu-io/vgpu/internal/logging"
	"github.com/vgpu-io/vgpu/lib/version"
)

// Run is a daemon's work: until ctx ends, logging to log.
type Run func(ctx context.Context, log *zap.Logger) error

// New returns the root command of daemon use; its own flags go on
// cmd.Flags().
func New(use, short string, run Run) *cobra.Command {
	var logOpts logging.Options
	cmd := &cobra.Command{
		Use:           use,
		Short:         short,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logOpts.Build()
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, log)
		},
	}
	logOpts.AddFlags(cmd.Flags())
	return cmd
}

// Main runs cmd and exits 1 with "<use>: <error>" on stderr when it fails.
func Main(cmd *cobra.Command) {
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, cmd.Name()+":", err)
		os.Exit(1)
	}
}
