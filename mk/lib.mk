# lib (accounting, placement) and `vgpuctl simulate placement`.
#
# bench-simulate replays openb_pod_list_default.csv on the 1,213-node openb
# cluster once per policy pair (with fragmentation and the FGD baseline) and prints the allocation table with each
# replay's wall time. The 5,000 nodes × 8 GPUs fit+score benchmarks are Go
# benchmarks in lib/placement, run by bench-go.

OPENB ?= $(ROOT)/../shared/traces/openb

BENCH_TARGETS += bench-simulate

.PHONY: bench-simulate
bench-simulate: $(BIN)/vgpuctl
	@if [ ! -f "$(OPENB)/openb_pod_list_default.csv" ]; then echo "bench-simulate: skipped, no openb trace in $(OPENB) (set OPENB=)"; exit 0; fi; \
	echo "== vgpuctl simulate placement: openb default, 1 seed, split count 20"; \
	$(BIN)/vgpuctl simulate placement --policy all --split-count 20 --seed 1 \
	  --cluster $(OPENB)/openb_node_list_gpu_node.csv --workload $(OPENB)/openb_pod_list_default.csv
