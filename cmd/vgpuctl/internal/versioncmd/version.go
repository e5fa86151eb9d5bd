// Package versioncmd is `vgpuctl version`: this client's version and, as
// kubectl version does, the server's, plus the vgpu components the cluster
// runs (the Deployments and DaemonSets labelled app.kubernetes.io/part-of=vgpu
// and the images they run), so that a mismatch is seen at a glance.
package versioncmd

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/cli"
	"github.com/vgpu-io/vgpu/lib/version"
)

// PartOf selects vgpu's workloads (the manifests label everything so).
const PartOf = "app.kubernetes.io/part-of=vgpu"

// Info is what `vgpuctl version -o json|yaml` prints.
type Info struct {
	ClientVersion string      `json:"clientVersion"`
	ServerVersion string      `json:"serverVersion,omitempty"`
	Components    []Component `json:"components,omitempty"`
}

// Component is one vgpu workload.
type Component struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Ready and Desired count pods.
	Ready   int32 `json:"ready"`
	Desired int32 `json:"desired"`
	// Images maps each container to its image.
	Images map[string]string `json:"images"`
}

type options struct {
	kube       cli.Kube
	output     cli.Output
	clientOnly bool
	newClient  func(*options) (kubernetes.Interface, error)
}

// NewCommand returns `version`.
func NewCommand() *cobra.Command {
	return newCommand(func(o *options) (kubernetes.Interface, error) { return o.kube.Client() })
}

func newCommand(newClient func(*options) (kubernetes.Interface, error)) *cobra.Command {
	o := &options{newClient: newClient}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions and the vgpu components the cluster runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.output.Validate(); err != nil {
				return err
			}
			info := Info{ClientVersion: version.Version}
			var err error
			if !o.clientOnly {
				err = o.server(cmd.Context(), &info)
			}
			if perr := o.print(cmd.OutOrStdout(), info); perr != nil {
				return perr
			}
			return err
		},
	}
	f := cmd.Flags()
	o.kube.AddFlags(f)
	o.output.AddFlag(f)
	f.BoolVar(&o.clientOnly, "client", false, "print the client version only; do not contact the cluster")
	return cmd
}

// server fills in what the cluster says; the client version is printed
// even when the cluster cannot be reached, as kubectl does.
func (o *options) server(ctx context.Context, info *Info) error {
	c, err := o.newClient(o)
	if err != nil {
		return err
	}
	v, err := c.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	info.ServerVersion = v.GitVersion
	list := metav1.ListOptions{LabelSelector: PartOf}
	deps, err := c.AppsV1().Deployments(metav1.NamespaceAll).List(ctx, list)
	if err != nil {
		return fmt.Errorf("listing vgpu Deployments: %w", err)
	}
	dss, err := c.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, list)
	if err != nil {
		return fmt.Errorf("listing vgpu DaemonSets: %w", err)
	}
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		info.Components = append(info.Components, component("Deployment", d.ObjectMeta, d.Spec.Template.Spec, d.Status.ReadyReplicas, want))
	}
	for _, d := range dss.Items {
		info.Components = append(info.Components, component("DaemonSet", d.ObjectMeta, d.Spec.Template.Spec, d.Status.NumberReady, d.Status.DesiredNumberScheduled))
	}
	sort.Slice(info.Components, func(i, j int) bool {
		a, b := info.Components[i], info.Components[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return nil
}

func component(kind string, m metav1.ObjectMeta, spec corev1.PodSpec, ready, desired int32) Component {
	images := map[string]string{}
	for _, c := range spec.Containers {
		images[c.Name] = c.Image
	}
	return Component{Kind: kind, Namespace: m.Namespace, Name: m.Name, Ready: ready, Desired: desired, Images: images}
}

func (o *options) print(w io.Writer, info Info) error {
	if !o.output.Table() {
		return o.output.Print(w, info)
	}
	fmt.Fprintf(w, "Client Version: %s\n", info.ClientVersion)
	if info.ServerVersion == "" {
		return nil
	}
	fmt.Fprintf(w, "Server Version: %s\n", info.ServerVersion)
	if len(info.Components) == 0 {
		fmt.Fprintf(w, "vgpu components: none found (no Deployment or DaemonSet labelled %s)\n", PartOf)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tREADY\tIMAGES")
	for _, c := range info.Components {
		names := make([]string, 0, len(c.Images))
		for n := range c.Images {
			names = append(names, n)
		}
		sort.Strings(names)
		imgs := make([]string, len(names))
		for i, n := range names {
			imgs[i] = n + "=" + c.Images[n]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", c.Kind, c.Namespace, c.Name, c.Ready, c.Desired, strings.Join(imgs, ","))
	}
	return tw.Flush()
}
