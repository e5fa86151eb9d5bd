// Package placement decides where a vGPU pod goes: which nodes it fits,
// how good each is under the node policy, and which GPUs of the chosen node
// each container gets under the GPU policy. It reads and books through a
// ledger.Ledger; it does no I/O, so the extender, the simulator
// (vgpuctl simulate placement) and the tests run the same code.
//
// # Rules
//
//   - Each of a container's N vGPUs goes to a different GPU.
//   - A later app container may share a GPU with an earlier one of the same
//     pod; their shares add up.
//   - Init containers run one at a time before the app containers, so per
//     GPU the pod holds the larger of the app sum and each init container.
//   - A whole GPU (nvidia.com/gpu alone, or gpucores 100) is exclusive: it
//     goes only to a GPU no other pod uses, and no other pod joins it.
//   - The pod's use/nouse-gputype and use/nouse-gpuuuid annotations, the
//     node's split count (vGPU slots per GPU) and memory scaling (memory
//     capacity = GPU memory × scaling) are honoured; unhealthy GPUs are
//     never used. gpumem-percentage resolves against each GPU's own memory.
//   - Containers are placed greedily in order (app, then init), each on the
//     GPUs its GPU policy prefers: binpack takes the fullest that still fits,
//     spread the emptiest, ties to the lower inventory position. Greedy can
//     miss a fit that only another choice for an earlier container allows;
//     Filter and Bind make the same choices, so they always agree.
//
// A GPU's load is its fullest dimension (slots/split count, memory/capacity,
// cores/100; 1 when held whole). A node's score is the mean load of its
// healthy GPUs with the pod placed: binpack prefers high, spread low.
//
// The fragmentation policy (docs/placement.md) ranks nodes and GPUs by how
// much the pod grows their expected fragmentation: the free GPU capacity
// that the pods the cluster receives could not use, over a mix of pod
// shapes learned online (Mix, passed in Policies.Mix; Policies.Host adds
// the nodes' free CPU and memory when the caller tracks them).
//
// # How the extender uses it
//
//   - Start-up and informer events: ledger.SetInventory(node, inv) from each
//     Node's vgpu.io/devices; ledger.Add(key, a) for each pod with a
//     vgpu.io/assignment (or Rebuild(all) after the informers sync);
//     ledger.Release(key) when a pod is deleted or terminates. Use one key
//     convention, e.g. the pod uid.
//   - /filter: request.FromPod(pod) (ErrNoGPU: pass every node through),
//     then Filter(l, req, nodeNames, DefaultPolicies(settings)); return the
//     fits and the failed map as FailedNodes.
//   - /prioritize: a Scorer rates each node at full precision;
//     ExtenderPriorities normalises the ratings of the nodes of the call
//     onto kube-scheduler's 0..10 (MaxExtenderPriority), one
//     HostPriority's score each.
//   - /bind: Bind(l, key, req, node, pol) plans and books under one node
//     lock and returns the assign.Pod to encode into vgpu.io/assignment. If
//     writing the annotation or the Binding fails, Release(key). A FitError
//     here means another bind won the race: return the error so the
//     scheduler retries the pod.
//
// Every function is safe to call from many HTTP handlers at once. Filter
// and Prioritize cost O(nodes × GPUs) and allocate only for failure reasons.
package placement
