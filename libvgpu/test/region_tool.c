/*
 * The C side of the region agreement test (lib/region/region_test.go) and a
 * debugging aid:
 *   region_tool layout        prints "field offset size" for every field
 *   region_tool write FILE    writes a region with the values of fill() below
 *   region_tool read FILE     prints a region's values as "field=value" lines
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu_region.h"

#define H(f) {"header." #f, offsetof(struct vgpu_region, header.f), sizeof(((struct vgpu_region_header *)0)->f)}
#define D(f) {"device." #f, offsetof(struct vgpu_region_device, f), sizeof(((struct vgpu_region_device *)0)->f)}
#define P(f) {"process." #f, offsetof(struct vgpu_region_process, f), sizeof(((struct vgpu_region_process *)0)->f)}
#define S(f) {"shared." #f, offsetof(struct vgpu_region_shared, f), sizeof(((struct vgpu_region_shared *)0)->f)}
static const struct { const char *name; size_t off, size; } fields[] = {
	{"region", 0, sizeof(struct vgpu_region)},
	{"region.devices", offsetof(struct vgpu_region, devices), sizeof(struct vgpu_region_device)},
	{"region.procs", offsetof(struct vgpu_region, procs), sizeof(struct vgpu_region_process)},
	H(magic), H(version), H(size), H(header_size), H(device_size), H(process_size), H(device_count),
	H(process_capacity), H(flags), H(reason), H(created_ns), H(live_sem), H(attached), H(unslotted),
	H(shared_capacity), H(reason_text), H(shared_seq),
	D(uuid), D(mem_limit), D(core_limit), D(mem_used), D(mem_peak), D(alloc_failures), D(mem_unslotted),
	D(mem_shared), D(util_seq),
	D(util_time_ns), D(util_permille), D(tat_ns), D(interval_ns), D(launches), D(seen_seq), D(seen_launches),
	D(seen_time_ns), D(throttled_ns), D(util_busy_ns), D(busy_tat_ns), D(seen_busy_ns),
	P(pid), P(state), P(start_time), P(mem_used),
	{"region.shared", offsetof(struct vgpu_region, shared), sizeof(struct vgpu_region_shared)},
	S(key), S(size), S(device), S(holders), S(seq), S(slots),
};

/* Known values: device i and process j get values derived from their index. */
static void fill(struct vgpu_region *r)
{
	struct vgpu_region_header *h = &r->header;
	h->magic = VGPU_REGION_MAGIC;
	h->version = VGPU_REGION_VERSION;
	h->size = sizeof(*r);
	h->header_size = sizeof(r->header);
	h->device_size = sizeof(r->devices[0]);
	h->process_size = sizeof(r->procs[0]);
	h->device_count = 3;
	h->process_capacity = VGPU_MAX_PROCS;
	h->flags = VGPU_FLAG_UNENFORCED;
	h->reason = VGPU_REASON_DRIVER_UNKNOWN;
	h->created_ns = 1700000000123456789ull;
	h->live_sem = 8;
	h->attached = 9;
	h->unslotted = 5;
	h->shared_capacity = VGPU_MAX_SHARED;
	h->shared_seq = 31;
	strcpy(h->reason_text, "test reason");
	for (int i = 0; i < 3; i++) {
		struct vgpu_region_device *d = &r->devices[i];
		snprintf(d->uuid, sizeof(d->uuid), "GPU-%08d-0000-0000-0000-000000000000", i);
		d->mem_limit = (uint64_t)(i + 1) << 30;
		d->core_limit = 10u * (uint32_t)(i + 1);
		d->mem_used = 1000ull + (uint64_t)i;
		d->mem_peak = 2000ull + (uint64_t)i;
		d->alloc_failures = 3ull + (uint64_t)i;
		d->mem_unslotted = 14ull + (uint64_t)i;
		d->mem_shared = 15ull + (uint64_t)i;
		d->util_seq = 4ull + (uint64_t)i;
		d->util_time_ns = 5ull + (uint64_t)i;
		d->util_permille = 600u + (uint32_t)i;
		d->tat_ns = 7ull + (uint64_t)i;
		d->interval_ns = 8ull + (uint64_t)i;
		d->launches = 9ull + (uint64_t)i;
		d->seen_seq = 10ull + (uint64_t)i;
		d->seen_launches = 11ull + (uint64_t)i;
		d->seen_time_ns = 12ull + (uint64_t)i;
		d->throttled_ns = 13ull + (uint64_t)i;
		d->util_busy_ns = 14ull + (uint64_t)i;
		d->busy_tat_ns = 15ull + (uint64_t)i;
		d->seen_busy_ns = 16ull + (uint64_t)i;
	}
	for (int j = 0; j < 2; j++) {
		struct vgpu_region_process *p = &r->procs[j * 5];
		p->pid = 100 + j;
		p->state = VGPU_PROC_ACTIVE | (j ? VGPU_PROC_COUNTED : 0);
		p->start_time = 5000ull + (uint64_t)j;
		for (int i = 0; i < 3; i++)
			p->mem_used[i] = (uint64_t)(j * 10 + i) << 20;
	}
	struct vgpu_region_shared *s = &r->shared[7];
	s->key = 0x1234567890abcdefull;
	s->size = 512ull << 20;
	s->device = 2;
	s->holders = 2;
	s->seq = 30;
	s->slots[0] = 1ull << 5;
	s->slots[15] = 1ull << 63;
}

static void dump(const struct vgpu_region *r)
{
	const struct vgpu_region_header *h = &r->header;
	printf("header.magic=%u\nheader.version=%u\nheader.size=%u\nheader.device_count=%u\nheader.flags=%u\n"
	       "header.reason=%u\nheader.created_ns=%llu\nheader.live_sem=%d\nheader.attached=%u\nheader.unslotted=%u\n"
	       "header.reason_text=%s\n",
	       h->magic, h->version, h->size, h->device_count, h->flags, h->reason, (unsigned long long)h->created_ns,
	       h->live_sem, h->attached, h->unslotted, h->reason_text);
	for (unsigned i = 0; i < h->device_count && i < VGPU_MAX_DEVICES; i++) {
		const struct vgpu_region_device *d = &r->devices[i];
		printf("device%u.uuid=%s\ndevice%u.mem_limit=%llu\ndevice%u.core_limit=%u\ndevice%u.mem_used=%llu\n"
		       "device%u.mem_unslotted=%llu\ndevice%u.mem_shared=%llu\n"
		       "device%u.util_seq=%llu\ndevice%u.util_permille=%u\ndevice%u.interval_ns=%llu\n",
		       i, d->uuid, i, (unsigned long long)d->mem_limit, i, d->core_limit, i,
		       (unsigned long long)d->mem_used, i, (unsigned long long)d->mem_unslotted, i,
		       (unsigned long long)d->mem_shared, i, (unsigned long long)d->util_seq, i, d->util_permille, i,
		       (unsigned long long)d->interval_ns);
	}
	for (int j = 0; j < VGPU_MAX_PROCS; j++) {
		const struct vgpu_region_process *p = &r->procs[j];
		if (p->state == VGPU_PROC_FREE)
			continue;
		printf("process%d.pid=%d\nprocess%d.start_time=%llu\nprocess%d.mem_used0=%llu\n", j, p->pid, j,
		       (unsigned long long)p->start_time, j, (unsigned long long)p->mem_used[0]);
	}
	for (int j = 0; j < VGPU_MAX_SHARED; j++) {
		const struct vgpu_region_shared *s = &r->shared[j];
		if (!s->key)
			continue;
		printf("shared%d.key=%llu\nshared%d.size=%llu\nshared%d.device=%u\nshared%d.holders=%u\n", j,
		       (unsigned long long)s->key, j, (unsigned long long)s->size, j, s->device, j, s->holders);
	}
}

int main(int argc, char **argv)
{
	static struct vgpu_region r;
	if (argc == 2 && !strcmp(argv[1], "layout")) {
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			printf("%s %zu %zu\n", fields[i].name, fields[i].off, fields[i].size);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "write")) {
		FILE *f = fopen(argv[2], "wb");
		fill(&r);
		if (!f || fwrite(&r, sizeof(r), 1, f) != 1 || fclose(f))
			return perror(argv[2]), 1;
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "read")) {
		FILE *f = fopen(argv[2], "rb");
		if (!f || fread(&r, sizeof(r), 1, f) != 1)
			return perror(argv[2]), 1;
		fclose(f);
		dump(&r);
		return 0;
	}
	fprintf(stderr, "usage: region_tool layout | write FILE | read FILE\n");
	return 2;
}
