// Package hostinfo reports the CPUs and memory this process may use: the CPU model, the
// hardware threads and physical cores usable under the process's affinity mask and its
// cgroup's CPU quota (v1 or v2), the instruction set extensions ONNX Runtime's CPU kernels pick
// from (AVX2, AVX-512, AMX on x86; SVE on arm64), and memory total and available under the
// cgroup's memory limit.
//
// It reads /proc and /sys through an fs.FS and asks the kernel for the affinity mask through
// an injected function, so that tests feed it fixture trees; parsing is split from reading. It
// holds no state and changes nothing; it must not decide thread counts (models and scheduler
// do, from what it reports) and must not touch GPUs (package gpu does).
package hostinfo

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"runtime"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Info is the host as this process may use it.
type Info struct {
	CPU    CPU    `json:"cpu"`
	Memory Memory `json:"memory"`
}

// CPU is the processor side of Info.
type CPU struct {
	// Model is the CPU's model name ("AMD EPYC 9654 96-Core Processor").
	Model string `json:"model"`
	// Online is the number of hardware threads the kernel has online.
	Online int `json:"online"`
	// Affinity is the number of hardware threads in the process's affinity mask.
	Affinity int `json:"affinity"`
	// Quota is the cgroup CPU limit in CPUs (1.5 = 150 ms per 100 ms); 0 when there is none.
	Quota float64 `json:"quota,omitempty"`
	// Threads is the hardware threads the process may keep busy: the affinity mask, bounded by
	// the quota rounded up.
	Threads int `json:"threads"`
	// Cores is the physical cores among the affinity mask, bounded by Threads.
	Cores int `json:"cores"`
	// GOMAXPROCS is the Go runtime's setting, which since Go 1.25 follows the quota too.
	GOMAXPROCS int `json:"gomaxprocs"`
	// Features are the instruction set extensions present that ONNX Runtime's CPU kernels use,
	// as the kernel names them in /proc/cpuinfo ("avx2", "avx512f", "amx_tile").
	Features []string `json:"features"`
}

// Memory is the memory side of Info, in bytes.
type Memory struct {
	// Total and Available are /proc/meminfo's MemTotal and MemAvailable.
	Total     uint64 `json:"total_bytes"`
	Available uint64 `json:"available_bytes"`
	// Limit is the cgroup's memory limit; 0 when there is none.
	Limit uint64 `json:"limit_bytes,omitempty"`
	// Usage is the cgroup's current usage (when it has a limit).
	Usage uint64 `json:"usage_bytes,omitempty"`
	// UsableTotal is Total bounded by Limit; UsableAvailable is Available bounded by what the
	// limit leaves.
	UsableTotal     uint64 `json:"usable_total_bytes"`
	UsableAvailable uint64 `json:"usable_available_bytes"`
}

// Source is where Read gets its facts; Detect uses the running machine's.
type Source struct {
	// FS is the root file system ("/"), holding proc/ and sys/.
	FS fs.FS
	// Affinity returns the CPUs (by number) in the process's affinity mask.
	Affinity func() ([]int, error)
	// Features lists the instruction set extensions present; nil takes the flags line of
	// /proc/cpuinfo.
	Features func() []string
	// GOMAXPROCS returns the Go runtime's setting; nil reports 0.
	GOMAXPROCS func() int
}

// Detect reads the running machine.
func Detect() (Info, error) {
	return Read(Source{
		FS:         os.DirFS("/"),
		Affinity:   affinity,
		Features:   cpuFeatures,
		GOMAXPROCS: func() int { return runtime.GOMAXPROCS(0) },
	})
}

// DetectMemory reads only the running machine's memory (cheap enough for every /health; the
// CPU side of Detect reads all of /proc/cpuinfo).
func DetectMemory() (Memory, error) { return readMemory(os.DirFS("/")) }

// Read reads the host from src. A missing cgroup file means no limit; a missing /proc/cpuinfo
// or /proc/meminfo is an error (every Linux has them).
func Read(src Source) (Info, error) {
	var info Info
	procs, err := readCPUInfo(src.FS)
	if err != nil {
		return info, err
	}
	mask, err := src.Affinity()
	if err != nil {
		return info, fmt.Errorf("hostinfo: affinity: %w", err)
	}
	cg, err := readCgroups(src.FS)
	if err != nil {
		return info, err
	}
	quota, err := cg.cpuQuota(src.FS)
	if err != nil {
		return info, err
	}
	c := cpuFrom(procs, mask, quota)
	if c.Online, err = readOnline(src.FS); err != nil {
		c.Online = len(procs.byCPU) // containers without /sys: every processor listed is online
	}
	if src.Features != nil {
		c.Features = src.Features()
	} else {
		c.Features = ortFeatures(procs.flags)
	}
	if src.GOMAXPROCS != nil {
		c.GOMAXPROCS = src.GOMAXPROCS()
	}
	info.CPU = c

	info.Memory, err = readMemory(src.FS)
	return info, err
}

func readMemory(fsys fs.FS) (Memory, error) {
	mem, err := readMeminfo(fsys)
	if err != nil {
		return mem, err
	}
	cg, err := readCgroups(fsys)
	if err != nil {
		return mem, err
	}
	if mem.Limit, mem.Usage, err = cg.memoryLimit(fsys); err != nil {
		return mem, err
	}
	return mem.usable(), nil
}

// cpuFrom combines the processors, the affinity mask and the quota into CPU.
func cpuFrom(procs cpuInfo, mask []int, quota float64) CPU {
	c := CPU{Model: procs.model, Affinity: len(mask), Quota: quota}
	cores := map[[2]int]bool{}
	for _, n := range mask {
		if p, ok := procs.byCPU[n]; ok {
			cores[[2]int{p.pkg, p.core}] = true
		}
	}
	c.Threads = c.Affinity
	if quota > 0 {
		c.Threads = min(c.Threads, int(math.Ceil(quota)))
	}
	c.Cores = len(cores)
	if c.Cores == 0 { // no core ids (some VMs, non-x86): count threads
		c.Cores = c.Affinity
	}
	c.Cores = min(c.Cores, c.Threads)
	return c
}

func (m Memory) usable() Memory {
	m.UsableTotal, m.UsableAvailable = m.Total, m.Available
	if m.Limit > 0 {
		m.UsableTotal = min(m.Total, m.Limit)
		left := uint64(0)
		if m.Usage < m.Limit {
			left = m.Limit - m.Usage
		}
		m.UsableAvailable = min(m.Available, left)
	}
	return m
}

// affinity asks the kernel for the process's CPU affinity mask.
func affinity() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, err
	}
	var out []int
	for i := range len(set) * 64 {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty affinity mask")
	}
	return out, nil
}

// cpuFeatures asks the CPU (through CPUID, with the OS's support for the wider registers
// checked) rather than trusting /proc/cpuinfo, which a hypervisor may not align with XCR0.
func cpuFeatures() []string {
	var out []string
	add := func(has bool, name string) {
		if has {
			out = append(out, name)
		}
	}
	x := cpu.X86
	add(x.HasAVX2, "avx2")
	add(x.HasAVXVNNI, "avx_vnni")
	add(x.HasAVX512F, "avx512f")
	add(x.HasAVX512BW, "avx512bw")
	add(x.HasAVX512VNNI, "avx512_vnni")
	add(x.HasAVX512BF16, "avx512_bf16")
	add(x.HasAMXTile, "amx_tile")
	add(x.HasAMXBF16, "amx_bf16")
	add(x.HasAMXInt8, "amx_int8")
	a := cpu.ARM64
	add(a.HasASIMD, "asimd")
	add(a.HasSVE, "sve")
	add(a.HasSVE2, "sve2")
	add(a.HasI8MM, "i8mm")
	return out
}
