/*
 * Entry points that reserve device memory outside the allocation calls:
 * the device-side malloc heap (cuCtxSetLimit) and graphs with memory
 * allocation nodes, whose memory the driver allocates at each launch from
 * a pool libvgpu does not see (docs/libvgpu.md, "Memory").
 */
#include <sys/mman.h>

#include "vgpu.h"

#define NEED(name) do { CU_ENTER(); if (!REAL(name)) return CUDA_ERROR_NOT_FOUND; } while (0)

/* The malloc heap this process booked per device, to book only the difference on a change. */
static uint64_t heap_booked[VGPU_MAX_DEVICES];

VGPU_EXPORT CUresult cuCtxSetLimit(int limit, size_t value)
{
	NEED(cuCtxSetLimit);
	int idx = limit == CU_LIMIT_MALLOC_HEAP_SIZE && vgpu_cfg.active ? vgpu_current_index() : -1;
	if (idx < 0)
		return REAL(cuCtxSetLimit)(limit, value);
	uint64_t old = __atomic_load_n(&heap_booked[idx], __ATOMIC_RELAXED);
	if (value > old && vgpu_mem_reserve(idx, value - old) != 0)
		return CUDA_ERROR_OUT_OF_MEMORY;
	CUresult r = REAL(cuCtxSetLimit)(limit, value);
	if (r != CUDA_SUCCESS) {
		if (value > old)
			vgpu_mem_release(idx, value - old);
		return r;
	}
	if (value < old)
		vgpu_mem_release(idx, old - value);
	__atomic_store_n(&heap_booked[idx], value, __ATOMIC_RELAXED);
	return r;
}

/* Whether a graph allocates memory when launched: one line, once, if a memory limit is set. */
static void check_graph(CUgraph g)
{
	typedef CUresult (*get_nodes_t)(CUgraph, CUgraphNode *, size_t *);
	typedef CUresult (*get_type_t)(CUgraphNode, int *);
	static int reported;
	if (__atomic_load_n(&reported, __ATOMIC_RELAXED) || !vgpu_route_limited(VGPU_ROUTE_MEM))
		return;
	get_nodes_t get_nodes = (get_nodes_t)HELPER(cuGraphGetNodes);
	get_type_t get_type = (get_type_t)HELPER(cuGraphNodeGetType);
	size_t n = 0;
	int found = 0;
	if (!get_nodes || !get_type || get_nodes(g, NULL, &n) != CUDA_SUCCESS) {
		found = -1;
	} else if (n) {
		/* Graphs of thousands of nodes are common (captured decoders): no fixed buffer. */
		size_t len = (n * sizeof(CUgraphNode) + 4095) & ~(size_t)4095;
		CUgraphNode *nodes = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (nodes == MAP_FAILED || get_nodes(g, nodes, &n) != CUDA_SUCCESS) {
			found = -1;
		} else {
			for (size_t i = 0; i < n && !found; i++) {
				int t = -1;
				if (get_type(nodes[i], &t) == CUDA_SUCCESS && t == CU_GRAPH_NODE_TYPE_MEM_ALLOC)
					found = 1;
			}
		}
		if (nodes != MAP_FAILED)
			munmap(nodes, len);
	}
	if (found && !__atomic_exchange_n(&reported, 1, __ATOMIC_ACQ_REL))
		vgpu_unenforced(VGPU_REASON_UNCOUNTED_ALLOC,
				found > 0 ? "a CUDA graph with memory allocation nodes was instantiated: its allocations are not counted"
					  : "a CUDA graph was instantiated whose nodes libvgpu cannot inspect");
}

VGPU_EXPORT CUresult cuGraphInstantiate(CUgraphExec *e, CUgraph g, CUgraphNode *err, char *log, size_t len)
{
	NEED(cuGraphInstantiate);
	check_graph(g);
	return REAL(cuGraphInstantiate)(e, g, err, log, len);
}

VGPU_EXPORT CUresult cuGraphInstantiate_v2(CUgraphExec *e, CUgraph g, CUgraphNode *err, char *log, size_t len)
{
	NEED(cuGraphInstantiate_v2);
	check_graph(g);
	return REAL(cuGraphInstantiate_v2)(e, g, err, log, len);
}

VGPU_EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags)
{
	NEED(cuGraphInstantiateWithFlags);
	check_graph(g);
	return REAL(cuGraphInstantiateWithFlags)(e, g, flags);
}

VGPU_EXPORT CUresult cuGraphInstantiateWithParams(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
	NEED(cuGraphInstantiateWithParams);
	check_graph(g);
	return REAL(cuGraphInstantiateWithParams)(e, g, p);
}

VGPU_EXPORT CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *p)
{
	NEED(cuGraphInstantiateWithParams_ptsz);
	check_graph(g);
	return REAL(cuGraphInstantiateWithParams_ptsz)(e, g, p);
}
