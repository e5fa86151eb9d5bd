// Package cli holds what every vgpuctl command takes and prints the way
// kubectl does: the kubeconfig flags (--kubeconfig, --context,
// --request-timeout) and -o json|yaml beside the table for people.
package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/vgpu-io/vgpu/internal/kubeclient"
)

// Kube are the flags that reach a cluster.
type Kube struct {
	opts    kubeclient.Options
	timeout time.Duration
}

// AddFlags registers --kubeconfig, --context and --request-timeout.
func (k *Kube) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&k.opts.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&k.opts.Context, "context", "", "the kubeconfig context to use")
	fs.DurationVar(&k.timeout, "request-timeout", 30*time.Second, "timeout of each request to the API server")
}

// Client returns a clientset; without any configuration its error says, as
// kubectl would, where it looked and how to give one.
func (k *Kube) Client() (kubernetes.Interface, error) {
	o := k.opts
	o.Component = "vgpuctl"
	cfg, err := o.Config()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = k.timeout
	return kubernetes.NewForConfig(cfg)
}

// Output is the -o flag: empty (or "table") for people, json or yaml for
// programs.
type Output struct {
	Format string
}

// AddFlag registers -o/--output.
func (o *Output) AddFlag(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Format, "output", "o", "", "output format: json or yaml (default: a table for people)")
}

// Validate rejects an unknown format with kubectl's words.
func (o Output) Validate() error {
	switch o.Format {
	case "", "table", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,yaml", o.Format)
}

// Table reports whether the output is the table for people.
func (o Output) Table() bool { return o.Format == "" || o.Format == "table" }

// Print writes v as indented JSON or as YAML (the same fields).
func (o Output) Print(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if o.Format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}
