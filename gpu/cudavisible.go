package gpu

import (
	"strconv"
	"strings"
)

// assignOrdinals sets each device's CUDAOrdinal from CUDA_VISIBLE_DEVICES as CUDA reads it,
// given CUDA_DEVICE_ORDER=PCI_BUS_ID (NVML's order; cmd/inferd sets it when unset):
//
//   - unset: every GPU, ordinal = NVML index;
//   - a comma-separated list of NVML indices or GPU UUIDs (a unique prefix is enough, as for
//     CUDA): the listed GPUs get ordinals 0, 1, ... in list order, the others -1;
//   - the list stops at the first entry that names no GPU, names one twice or names a MIG
//     instance (CUDA ignores the rest of the list too); an empty value hides every GPU.
func assignOrdinals(devs []Device, visible string) {
	if visible == "" {
		// Unset and set-to-empty differ for CUDA, but Getenv cannot tell them apart; an empty
		// value is so rare a choice that treating it as unset is the safer error.
		for i := range devs {
			devs[i].CUDAOrdinal = devs[i].Index
		}
		return
	}
	for i := range devs {
		devs[i].CUDAOrdinal = -1
	}
	ordinal := 0
	for entry := range strings.SplitSeq(visible, ",") {
		i := match(devs, strings.TrimSpace(entry))
		if i < 0 || devs[i].CUDAOrdinal >= 0 {
			return
		}
		devs[i].CUDAOrdinal = ordinal
		ordinal++
	}
}

// match returns the position in devs of the GPU entry names, or -1.
func match(devs []Device, entry string) int {
	if n, err := strconv.Atoi(entry); err == nil {
		for i, d := range devs {
			if d.Index == n {
				return i
			}
		}
		return -1
	}
	if !strings.HasPrefix(entry, "GPU-") || len(entry) <= len("GPU-") {
		return -1 // MIG-... or garbage
	}
	found := -1
	for i, d := range devs {
		if strings.HasPrefix(d.UUID, entry) {
			if found >= 0 {
				return -1 // ambiguous prefix
			}
			found = i
		}
	}
	return found
}
