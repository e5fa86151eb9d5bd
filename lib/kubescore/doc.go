// Package kubescore models how kube-scheduler v1.37.2 chooses a node for a
// pod that vgpu's extender also scores, so that the simulator can say which
// nodes kube-scheduler may choose, not only which the GPU policy prefers
// (docs/placement.md, "The digital twin").
//
// kube-scheduler filters the nodes (its own plugins, then the extender's
// filter), scores the feasible ones with each enabled score plugin
// (0..100 after the plugin's NormalizeScore, times the plugin's weight),
// adds the extender's priority × its weight × 10 (MaxNodeScore /
// MaxExtenderPriority), and picks a node of the highest total at random.
// With one feasible node it scores nothing.
//
// Modelled, from pods' and nodes' objects alone, as kube-scheduler
// computes them:
//   - NodeResourcesFit's filter (CPU, memory, ephemeral storage, pod count
//     (none on a node whose allocatable lists no pods) and extended
//     resources less those the extender manages with ignoredByScheduler),
//     NodeUnschedulable and TaintToleration's filter.
//   - A pod's requests as kube-scheduler sums them: sidecars beside the
//     app, init containers beside the sidecars before them, pod-level
//     requests (spec.resources) in place of the containers' for CPU,
//     memory and huge pages, overhead on top, and, for a pod mid-resize,
//     the larger of its spec and the kubelet's allocation.
//   - NodeResourcesFit's score: LeastAllocated over CPU and memory, weights
//     1 and 1, on requests where a container that names no CPU or memory
//     request counts 100m CPU and 200 MiB (DefaultMilliCPURequest,
//     DefaultMemoryRequest).
//   - NodeResourcesBalancedAllocation's score over CPU and memory on the
//     requests as written; a pod that requests neither skips it.
//   - TaintToleration's score: intolerable PreferNoSchedule taints,
//     normalised in reverse (no such taint anywhere: 100 on every node).
//   - ImageLocality's score from the images nodes report.
//   - The extender's priorities (placement.ExtenderPriorities) and
//     kube-scheduler's tie-break: a node the extender leaves out of its
//     answer (priority 0) loses a tie to one it lists.
//
// Not modelled, because for the pods the model accepts they add nothing
// (the plugin skips itself in PreScore, or scores every node alike);
// Unmodelled says when a pod or cluster falls outside:
//   - NodeAffinity: a pod without preferred node affinity (and no
//     addedAffinity in the profile) skips it.
//   - PodTopologySpread: a pod without topologySpreadConstraints skips it,
//     unless its system default constraints apply, which they do only to a
//     pod that a Service, ReplicationController, ReplicaSet or StatefulSet
//     selects: the model takes a pod without labels or controller to be
//     such a pod.
//   - InterPodAffinity: skipped when neither the pod nor any pod on a node
//     has affinity terms.
//   - VolumeBinding and DynamicResources: skipped without persistent
//     volume claims or resource claims.
//   - Extended resources backed by DRA (DRAExtendedResource, GA in 1.37):
//     NodeResourcesFit and BalancedAllocation score only CPU and memory by
//     default, so such resources matter only to the filter, on a node that
//     does not advertise the resource itself; vgpu's nodes advertise
//     nvidia.com/gpu through the device plugin.
//   - percentageOfNodesToScore: kube-scheduler scores every feasible node
//     of a cluster under 100 nodes; above, it samples (the simulator's
//     --percentage-of-nodes-to-score).
//
// Unmodelled also flags a pod kube-scheduler would not place at all (one
// naming its node; callers that hold a pod back with scheduling gates, as
// the twin does, judge the pod as it will be once they are removed), a
// runtime class whose
// admission may still add overhead and constraints, and host ports, the app
// containers', the sidecars' and, on the host network, the container ports.
//
// Users: the digital twin (test/e2e/twin) and `vgpuctl simulate placement
// --kubeconfig` (the what-if), which places pods one after another, each
// booked with Cluster.Add. The package does no I/O: callers hand it the
// objects they read.
package kubescore
