/*
 * The names of the container contract that libvgpu reads
 * (docs/contract.md). lib/contract is where they are defined; the test
 * lib/contract/clib_test.go checks that every value here equals its Go
 * constant and that no other libvgpu source spells one of them out.
 */
#ifndef VGPU_CONTRACT_H
#define VGPU_CONTRACT_H

#define VGPU_ENV_VISIBLE_DEVICES "NVIDIA_VISIBLE_DEVICES" /* EnvVisibleDevices */
#define VGPU_ENV_MEMORY_LIMITS "VGPU_MEMORY_LIMITS_MIB"   /* EnvMemoryLimits */
#define VGPU_ENV_CORE_LIMITS "VGPU_CORE_LIMITS"           /* EnvCoreLimits */
#define VGPU_ENV_REGION "VGPU_REGION"                     /* EnvRegion */
#define VGPU_ENV_LOG_LEVEL "VGPU_LOG_LEVEL"               /* EnvLogLevel */
#define VGPU_LIMITS_VERSION_KEY "VGPU_LIMITS_VERSION"     /* LimitsVersionKey */
#define VGPU_LIMITS_VERSION "1"                           /* LimitsVersion */
#define VGPU_LIMITS_FILE_NAME "limits"                    /* LimitsFileName */

#endif
