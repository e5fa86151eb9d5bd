// Package logging builds every vgpu daemon's zap logger from the same
// --log-level flag, so that one level name means the same in each.
package logging

import (
	"fmt"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Options are the logging flags.
type Options struct {
	Level string
}

// AddFlags registers --log-level.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Level, "log-level", "info", "log level: debug, info, warn or error")
}

// Build returns a JSON (production) logger at the chosen level.
func (o Options) Build() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(o.Level)
	if err != nil || lvl < zapcore.DebugLevel || lvl > zapcore.ErrorLevel {
		return nil, fmt.Errorf("--log-level=%q: must be debug, info, warn or error", o.Level)
	}
	c := zap.NewProductionConfig()
	c.Level = zap.NewAtomicLevelAt(lvl)
	return c.Build()
}
