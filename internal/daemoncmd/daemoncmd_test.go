package daemoncmd

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestCommand(t *testing.T) {
	var got zapcore.Level
	cmd := New("monitor", "node agent", func(ctx context.Context, log *zap.Logger) error {
		if ctx.Err() != nil {
			return errors.New("context already over")
		}
		got = zapcore.InfoLevel
		if log.Core().Enabled(zapcore.DebugLevel) {
			got = zapcore.DebugLevel
		}
		return nil
	})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--log-level=debug"})
	if err := cmd.Execute(); err != nil || got != zapcore.DebugLevel {
		t.Errorf("run: %v, level %v", err, got)
	}
	cmd.SetArgs([]string{"extra"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "unknown command") && !strings.Contains(err.Error(), "accepts 0 arg") {
		t.Errorf("an argument was accepted: %v", err)
	}
	cmd.SetArgs([]string{"--log-level=loud"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Errorf("bad level: %v", err)
	}
	out.Reset()
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil || !strings.Contains(out.String(), "dev") {
		t.Errorf("--version: %q %v", out.String(), err)
	}
}
