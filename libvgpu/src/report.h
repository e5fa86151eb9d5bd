/*
 * Saying that a limit does not hold: see report.c. vgpu_unenforced itself is
 * declared in vgpu.h, for every unit that finds a cause.
 */
#ifndef VGPU_REPORT_H
#define VGPU_REPORT_H

#include "vgpu.h"

/* One line on stderr: "vgpu: <lead>: <text>; <what still holds>". */
VGPU_HIDDEN void vgpu_say(const char *lead, const char *text, int reason);
/* A cores limit is set and the shared region paces the launches. */
VGPU_HIDDEN int vgpu_compute_limited(void);
/* init.c: the container's shared region is attached; causes found before
 * are recorded in it now. */
VGPU_HIDDEN void vgpu_report_shared(void);
/* init.c: initialisation is over. */
VGPU_HIDDEN void vgpu_report_ready(void);

#endif
