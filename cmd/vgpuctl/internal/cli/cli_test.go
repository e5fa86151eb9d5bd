package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestOutput(t *testing.T) {
	v := map[string]any{"node": "gpu-1", "gpus": 2}
	for format, want := range map[string]string{"json": "{\n  \"gpus\": 2,\n  \"node\": \"gpu-1\"\n}\n", "yaml": "gpus: 2\nnode: gpu-1\n"} {
		var b bytes.Buffer
		o := Output{Format: format}
		if err := o.Validate(); err != nil || o.Table() {
			t.Fatalf("%s: %v", format, err)
		}
		if err := o.Print(&b, v); err != nil || b.String() != want {
			t.Errorf("%s: %q, %v; want %q", format, b.String(), err, want)
		}
	}
	if err := (Output{Format: "xml"}).Validate(); err == nil || !strings.Contains(err.Error(), "allowed formats are: json,yaml") {
		t.Errorf("-o xml: %v", err)
	}
	if !(Output{}).Table() || !(Output{Format: "table"}).Table() {
		t.Error("the default is not the table")
	}
}

// Without any kubeconfig vgpuctl says where it looked and what to give, not
// client-go's KUBERNETES_MASTER advice.
func TestNoKubeconfigIsExplained(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	var k Kube
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	k.AddFlags(fs)
	_, err := k.Client()
	if err == nil || strings.Contains(err.Error(), "KUBERNETES_MASTER") || !strings.Contains(err.Error(), "--kubeconfig") || !strings.Contains(err.Error(), "$KUBECONFIG") {
		t.Errorf("error %v", err)
	}
}
