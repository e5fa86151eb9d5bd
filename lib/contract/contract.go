// Package contract names everything that crosses a process boundary in vgpu:
// Kubernetes resource names, annotation keys, the environment variables and
// paths of the container contract. Every component takes these names from here
// so that the parts cannot drift apart; docs/contract.md documents the
// contracts, docs/resources.md what users write.
package contract

import "path/filepath"

// Extended resources a container may ask for (docs/resources.md#container-resources).
const (
	// ResourceGPU is the number of vGPUs; each lands on a different physical GPU.
	ResourceGPU = "nvidia.com/gpu"
	// ResourceMemory is the GPU memory limit per vGPU, in MiB.
	ResourceMemory = "nvidia.com/gpumem"
	// ResourceMemoryPercentage is the memory limit as 1–100 % of the GPU.
	ResourceMemoryPercentage = "nvidia.com/gpumem-percentage"
	// ResourceCores is the compute share per vGPU, 1–100 % of the SMs.
	ResourceCores = "nvidia.com/gpucores"
)

// Resources lists every vgpu resource name, ResourceGPU first.
var Resources = []string{ResourceGPU, ResourceMemory, ResourceMemoryPercentage, ResourceCores}

// Pod annotations a user may set (docs/resources.md#pod-annotations-a-user-may-set).
const (
	AnnotationUseGPUType   = "nvidia.com/use-gputype"
	AnnotationNoUseGPUType = "nvidia.com/nouse-gputype"
	AnnotationUseGPUUUID   = "nvidia.com/use-gpuuuid"
	AnnotationNoUseGPUUUID = "nvidia.com/nouse-gpuuuid"
	AnnotationNodePolicy   = "vgpu.io/node-scheduler-policy"
	AnnotationGPUPolicy    = "vgpu.io/gpu-scheduler-policy"
)

// Annotations written by vgpu components.
const (
	// AnnotationDevices is the node inventory, written by the device plugin
	// on its Node (docs/contract.md#node-inventory).
	AnnotationDevices = "vgpu.io/devices"
	// AnnotationAssignment is written once on a pod by the extender at bind
	// (docs/contract.md#assignment).
	AnnotationAssignment = "vgpu.io/assignment"
	// AnnotationAllocated is written on a pod by the device plugin after Allocate:
	// versioned JSON of the containers served and the GPU uuids each got
	// (docs/contract.md#annotations).
	AnnotationAllocated = "vgpu.io/allocated"
)

// Labels.
const (
	// LabelOptOut on a namespace or pod with value "disabled" makes the webhook skip it.
	LabelOptOut = "vgpu.io/webhook"
	// LabelGPUNode marks the nodes the device plugin and monitor run on.
	LabelGPUNode = "vgpu.io/gpu-node"
)

// Environment variables of the container contract (docs/contract.md#environment),
// set by the device plugin's Allocate and read by libvgpu.
const (
	// EnvVisibleDevices lists the assigned GPU uuids, comma separated.
	EnvVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	// EnvMemoryLimits is the memory limit in MiB of each visible device, comma
	// separated, in the order of EnvVisibleDevices.
	EnvMemoryLimits = "VGPU_MEMORY_LIMITS_MIB"
	// EnvCoreLimits is the SM share (1–100, 0 = no limit) of each visible
	// device, comma separated, in the order of EnvVisibleDevices.
	EnvCoreLimits = "VGPU_CORE_LIMITS"
	// EnvRegion is the path, inside the container, of the shared region file.
	EnvRegion = "VGPU_REGION"
	// EnvLogLevel sets libvgpu's verbosity: error (default), warn, info, debug.
	EnvLogLevel = "VGPU_LOG_LEVEL"
	// EnvLDPreload is set as well as the mounted ld.so.preload, for musl images.
	EnvLDPreload = "LD_PRELOAD"
)

// The limits file (docs/contract.md#where-limits-come-from): what every
// process of the container takes its limits from, whatever its environment.
const (
	// LimitsVersionKey is the limits file's version line; LimitsVersion its value.
	LimitsVersionKey = "VGPU_LIMITS_VERSION"
	LimitsVersion    = "1"
	// LimitsFileName is the file's name beside libvgpu, in the container and
	// as the empty placeholder in the installed library directory.
	LimitsFileName = "limits"
	// HostLimitsSuffix follows the region directory's name on the host.
	HostLimitsSuffix = ".limits"
)

// Paths of the container contract (docs/contract.md#mounts).
const (
	// HostRoot is vgpu's directory on every GPU node.
	HostRoot = "/var/lib/vgpu"
	// HostContainersDir holds one region directory per container:
	// <HostContainersDir>/<pod-uid>_<container>/.
	HostContainersDir = HostRoot + "/containers"
	// HostClaimsDir holds, on the DRA path, one region directory per
	// request of a prepared claim: <HostClaimsDir>/<claim-uid>_<request>/.
	HostClaimsDir = HostRoot + "/claims"
	// HostLibDir holds libvgpu, one versioned directory per installed build.
	HostLibDir = HostRoot + "/lib"
	// ContainerRegionDir is where the region directory is mounted in a container.
	ContainerRegionDir = "/var/run/vgpu"
	// RegionFileName is the name of the shared region file in that directory.
	RegionFileName = "region"
	// ContainerLibPath is where libvgpu is mounted in a container.
	ContainerLibPath = "/usr/local/vgpu/libvgpu.so"
	// ContainerPreloadPath is the file mounted over the container's ld.so.preload.
	ContainerPreloadPath = "/etc/ld.so.preload"
	// ContainerLimitsPath is where the limits file is mounted, read-only:
	// beside ContainerLibPath, where libvgpu looks for it.
	ContainerLimitsPath = "/usr/local/vgpu/" + LimitsFileName
)

// ContainerDirName is the host region directory name of one container.
func ContainerDirName(podUID, container string) string {
	return podUID + "_" + container
}

// ClaimDirName is the host region directory name of one request of a
// prepared claim (DRA path): prepare works per claim, not per container.
func ClaimDirName(claimUID, request string) string {
	return claimUID + "_" + request
}

// HostLimitsPath is the host path of one container's limits file, beside
// (never inside) its region directory, which the container can write.
func HostLimitsPath(containersDir, podUID, container string) string {
	return filepath.Join(containersDir, ContainerDirName(podUID, container)+HostLimitsSuffix)
}

// Settings ConfigMap (docs/settings.md), read by every component.
const (
	DefaultNamespace     = "vgpu-system"
	SettingsConfigMap    = "vgpu-settings"
	DefaultSchedulerName = "vgpu-scheduler"
)
