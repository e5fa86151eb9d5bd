// Package kubeclient builds the Kubernetes client of every vgpu binary the
// same way, with the same flags: --kubeconfig, else $KUBECONFIG, else
// ~/.kube/config, else the in-cluster service account (kubectl's order, then
// a pod's); the client limits; protobuf; a user agent naming the component.
package kubeclient

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vgpu-io/vgpu/lib/version"
)

// Options are the client flags.
type Options struct {
	// Kubeconfig is --kubeconfig; empty follows $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster service account.
	Kubeconfig string
	// Context is a kubeconfig context other than the current one (vgpuctl's
	// --context); daemons leave it empty.
	Context string
	QPS     float32
	Burst   int
	// Component names the binary in the user agent, vgpu-<component>/<version>.
	Component string
}

// AddFlags registers --kubeconfig, --kube-api-qps and --kube-api-burst with
// the component's defaults.
func (o *Options) AddFlags(fs *pflag.FlagSet, qps float32, burst int) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, then ~/.kube/config, then the in-cluster service account")
	fs.Float32Var(&o.QPS, "kube-api-qps", qps, "queries per second to the API server")
	fs.IntVar(&o.Burst, "kube-api-burst", burst, "burst of queries to the API server")
}

// Config returns the REST configuration the options select.
func (o Options) Config() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = o.Kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: o.Context}).ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return nil, noConfig(rules)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	if o.QPS != 0 {
		cfg.QPS = o.QPS
	}
	if o.Burst != 0 {
		cfg.Burst = o.Burst
	}
	cfg.UserAgent = "vgpu-" + o.Component + "/" + version.Version
	// Every object vgpu reads or writes is a built-in type: protobuf costs
	// the API server and the binary a fraction of JSON to encode and decode
	// (kube-scheduler's own client does the same).
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg, nil
}

// Client returns a clientset for the options.
func (o Options) Client() (kubernetes.Interface, error) {
	cfg, err := o.Config()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// ErrNoConfiguration is what Config returns, wrapped with where it looked,
// when no kubeconfig was found and the process is not in a pod.
var ErrNoConfiguration = errors.New("no Kubernetes configuration found")

// noConfig says, as kubectl would, that there is no configuration, where it
// was looked for and how to give one, instead of client-go's advice to set
// KUBERNETES_MASTER.
func noConfig(rules *clientcmd.ClientConfigLoadingRules) error {
	var looked []string
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		looked = append(looked, "$KUBECONFIG ("+env+")")
	} else {
		looked = append(looked, "$KUBECONFIG (not set)", clientcmd.RecommendedHomeFile)
	}
	looked = append(looked, "the in-cluster service account (not running in a pod)")
	return fmt.Errorf("%w: looked in %s; give --kubeconfig=<file> or set $KUBECONFIG",
		ErrNoConfiguration, strings.Join(looked, ", "))
}
