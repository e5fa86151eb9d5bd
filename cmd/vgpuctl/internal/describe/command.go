// Package describe is `vgpuctl describe node`: how a node's GPUs are
// shared, per GPU and per pod, read from the Node's vgpu.io/devices and the
// pods' vgpu.io/assignment annotations (get/list only), and, with --usage,
// what the node's monitor measures.
package describe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/vgpu-io/vgpu/cmd/vgpuctl/internal/cli"
	"github.com/vgpu-io/vgpu/lib/annotation"
	"github.com/vgpu-io/vgpu/lib/booking"
	"github.com/vgpu-io/vgpu/lib/contract"
	"github.com/vgpu-io/vgpu/lib/dra"
)

type options struct {
	kube             cli.Kube
	output           cli.Output
	usage            bool
	monitorPort      int
	monitorAddress   string
	monitorNamespace string
	monitorSelector  string
	usageTimeout     time.Duration

	newClient func(o *options) (kubernetes.Interface, error)
}

// NewCommand returns `describe` with its `node` subcommand.
func NewCommand() *cobra.Command {
	return newCommand(clientFromKubeconfig)
}

func newCommand(newClient func(o *options) (kubernetes.Interface, error)) *cobra.Command {
	o := &options{newClient: newClient}
	describe := &cobra.Command{
		Use:   "describe",
		Short: "Show how GPUs are shared",
	}
	node := &cobra.Command{
		Use:   "node [NAME]",
		Short: "Show a node's GPUs, what is allocated on each and to which pods; without NAME, one line per GPU node",
		Example: `  vgpuctl describe node                 # every GPU node, one line each
  vgpuctl describe node gpu-1           # per GPU: allocation, a bar, the pods on it
  vgpuctl describe node gpu-1 --usage   # also what the node's monitor measures
  vgpuctl describe node gpu-1 -o yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.output.Validate(); err != nil {
				return err
			}
			client, err := o.newClient(o)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return o.list(cmd.Context(), client, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			return o.one(cmd.Context(), client, args[0], cmd.OutOrStdout())
		},
	}
	f := node.Flags()
	o.kube.AddFlags(f)
	o.output.AddFlag(f)
	f.BoolVar(&o.usage, "usage", false, "also show actual usage measured by the node's monitor (needs a node NAME)")
	f.IntVar(&o.monitorPort, "monitor-port", defaultPort, "port of the monitor's /metrics")
	f.StringVar(&o.monitorNamespace, "monitor-namespace", contract.DefaultNamespace, "namespace of the monitor DaemonSet")
	f.StringVar(&o.monitorSelector, "monitor-selector", "app.kubernetes.io/name=vgpu-monitor", "label selector of the monitor pods")
	f.StringVar(&o.monitorAddress, "monitor-address", "", "host:port of the node's monitor, instead of finding its pod (or the node's InternalIP) and --monitor-port")
	f.DurationVar(&o.usageTimeout, "usage-timeout", 3*time.Second, "how long to wait for the monitor before showing allocation only")
	describe.AddCommand(node)
	return describe
}

func clientFromKubeconfig(o *options) (kubernetes.Interface, error) { return o.kube.Client() }

// serverError is an error the API server answered, worded as kubectl words it.
type serverError struct{ reason, message string }

func (e *serverError) Error() string {
	if e.reason == "" {
		return "Error from server: " + e.message
	}
	return "Error from server (" + e.reason + "): " + e.message
}

// apiError words API errors as kubectl does.
func apiError(err error) error {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		return &serverError{reason: string(s.Reason), message: s.Message}
	}
	return err
}

// errNoInventory is returned for a node the device plugin has not described.
func errNoInventory(name string) error {
	return fmt.Errorf("node %q has no vgpu GPU inventory (neither annotation %s nor a ResourceSlice of driver %s): it is not a vgpu GPU node, or its node agent has not started", name, contract.AnnotationDevices, dra.Driver)
}

// draRecords are the cluster's DRA objects a node report reads on that path.
type draRecords struct {
	slices []*resourcev1.ResourceSlice
	claims []*resourcev1.ResourceClaim
}

func listDRA(ctx context.Context, c kubernetes.Interface, opts metav1.ListOptions) (draRecords, error) {
	var d draRecords
	rs, err := c.ResourceV1().ResourceSlices().List(ctx, opts)
	if err != nil {
		return d, apiError(err)
	}
	for i := range rs.Items {
		d.slices = append(d.slices, &rs.Items[i])
	}
	return d, nil
}

func (d *draRecords) listClaims(ctx context.Context, c kubernetes.Interface) error {
	cl, err := c.ResourceV1().ResourceClaims(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return apiError(err)
	}
	for i := range cl.Items {
		d.claims = append(d.claims, &cl.Items[i])
	}
	return nil
}

// report builds a node's report from the record of the path it is on:
// its vgpu.io/devices inventory and its pods' assignments (extender path),
// or its ResourceSlice and the allocated claims (DRA path, docs/dra.md).
func report(node *corev1.Node, pods []corev1.Pod, d draRecords) (NodeReport, error) {
	if hasInventory(node) {
		inv, err := annotation.DecodeDevices(node.Annotations[contract.AnnotationDevices])
		if err != nil {
			return NodeReport{}, fmt.Errorf("node %q: %v", node.Name, err)
		}
		bs, warnings := booking.FromPods(node.Name, pods)
		r := buildNode(node.Name, inv, bs, warnings)
		r.Path = "extender"
		return r, nil
	}
	inv, ok := dra.Inventory(node.Name, d.slices)
	if !ok {
		return NodeReport{}, errNoInventory(node.Name)
	}
	bs, warnings := booking.FromClaims(node.Name, d.slices, d.claims, pods)
	r := buildNode(node.Name, inv, bs, warnings)
	r.Path = "dra"
	return r, nil
}

func (o *options) one(ctx context.Context, c kubernetes.Interface, name string, out io.Writer) error {
	node, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return apiError(err)
	}
	var d draRecords
	if !hasInventory(node) {
		if d, err = listDRA(ctx, c, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String()}); err != nil {
			return err
		}
		if _, ok := dra.Inventory(name, d.slices); !ok {
			return errNoInventory(name)
		}
		if err := d.listClaims(ctx, c); err != nil {
			return err
		}
	}
	pods, err := c.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", name).String(),
	})
	if err != nil {
		return apiError(err)
	}
	r, err := report(node, onNode(pods.Items, name), d)
	if err != nil {
		return err
	}
	if o.usage {
		o.addUsage(ctx, c, node, &r)
	}
	if !o.output.Table() {
		return o.output.Print(out, r)
	}
	return renderNode(out, r)
}

func (o *options) addUsage(ctx context.Context, c kubernetes.Interface, node *corev1.Node, r *NodeReport) {
	addr := o.monitorAddress
	if addr == "" {
		var err error
		if addr, err = o.findMonitor(ctx, c, node); err != nil {
			r.Usage = &UsageStatus{Source: "(none)", Error: err.Error()}
			return
		}
	}
	r.Usage = &UsageStatus{Source: addr}
	fams, err := scrape(ctx, addr, o.usageTimeout)
	if err != nil {
		r.Usage.Error = err.Error()
		return
	}
	applyUsage(r, fams)
}

// findMonitor returns the address of the monitor pod running on the node;
// a monitor on the host network answers on the node's address instead.
func (o *options) findMonitor(ctx context.Context, c kubernetes.Interface, node *corev1.Node) (string, error) {
	pods, err := c.CoreV1().Pods(o.monitorNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: o.monitorSelector,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node.Name).String(),
	})
	if err != nil {
		return "", apiError(err)
	}
	for _, p := range onNode(pods.Items, node.Name) {
		if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		if p.Spec.HostNetwork {
			break
		}
		return net.JoinHostPort(p.Status.PodIP, strconv.Itoa(o.monitorPort)), nil
	}
	return monitorAddress(node, o.monitorPort)
}

// onNode keeps the pods bound to the node; a fake or old API server may
// ignore the field selector.
func onNode(pods []corev1.Pod, name string) []corev1.Pod {
	out := pods[:0:0]
	for _, p := range pods {
		if p.Spec.NodeName == name {
			out = append(out, p)
		}
	}
	return out
}

func (o *options) list(ctx context.Context, c kubernetes.Interface, out, errOut io.Writer) error {
	if o.usage {
		return fmt.Errorf("--usage needs a node NAME: it asks that node's monitor")
	}
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return apiError(err)
	}
	d, err := listDRA(ctx, c, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var gpuNodes []corev1.Node
	onDRA := false
	for _, n := range nodes.Items {
		if hasInventory(&n) {
			gpuNodes = append(gpuNodes, n)
		} else if _, ok := dra.Inventory(n.Name, d.slices); ok {
			gpuNodes = append(gpuNodes, n)
			onDRA = true
		}
	}
	sort.Slice(gpuNodes, func(i, j int) bool { return gpuNodes[i].Name < gpuNodes[j].Name })
	summaries := []NodeSummary{}
	if len(gpuNodes) > 0 {
		pods, err := c.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			return apiError(err)
		}
		if onDRA {
			if err := d.listClaims(ctx, c); err != nil {
				return err
			}
		}
		byNode := map[string][]corev1.Pod{}
		for _, p := range pods.Items {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
		}
		for i := range gpuNodes {
			n := &gpuNodes[i]
			r, err := report(n, byNode[n.Name], d)
			if err != nil {
				fmt.Fprintf(errOut, "warning: node %q skipped: %v\n", n.Name, err)
				continue
			}
			summaries = append(summaries, summarize(r))
		}
	}
	if !o.output.Table() {
		return o.output.Print(out, map[string]any{"nodes": summaries})
	}
	if len(summaries) == 0 {
		fmt.Fprintln(errOut, "No vgpu GPU nodes found.")
		return nil
	}
	return renderList(out, summaries)
}
