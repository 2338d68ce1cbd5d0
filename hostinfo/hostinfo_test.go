package hostinfo

import (
	"bufio"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// Two sockets × two cores × two threads; processors 0-3 on socket 0, 4-7 on socket 1, with
// siblings 0/1, 2/3, ... sharing a core.
const cpuinfo8 = `processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8480+
physical id	: 0
core id		: 0
flags		: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8

processor	: 1
model name	: Intel(R) Xeon(R) Platinum 8480+
physical id	: 0
core id		: 0
flags		: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8

processor	: 2
physical id	: 0
core id		: 1

processor	: 3
physical id	: 0
core id		: 1

processor	: 4
physical id	: 1
core id		: 0

processor	: 5
physical id	: 1
core id		: 0

processor	: 6
physical id	: 1
core id		: 1

processor	: 7
physical id	: 1
core id		: 1
`

const meminfo = `MemTotal:       65536000 kB
MemFree:        1000000 kB
MemAvailable:   32768000 kB
`

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

// fixture is a machine with cpuinfo8 and meminfo, plus the cgroup files given.
func fixture(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{
		"proc/cpuinfo":                  file(cpuinfo8),
		"proc/meminfo":                  file(meminfo),
		"sys/devices/system/cpu/online": file("0-7\n"),
	}
	for name, data := range files {
		fsys[name] = file(data)
	}
	return fsys
}

const (
	mountsV2     = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	mountsHybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	// A container without a cgroup namespace: the mounts' roots are its own cgroup.
	mountsContainerV1 = `700 690 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
701 690 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
`
)

func TestRead(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	tests := []struct {
		name     string
		files    map[string]string
		mask     []int
		wantCPU  CPU
		wantMem  Memory
		features []string
	}{
		{
			name:    "no cgroup limits",
			files:   map[string]string{"proc/self/cgroup": "0::/\n", "proc/self/mountinfo": mountsV2},
			mask:    all,
			wantCPU: CPU{Affinity: 8, Threads: 8, Cores: 4},
			wantMem: Memory{Total: 65536000 << 10, Available: 32768000 << 10, UsableTotal: 65536000 << 10, UsableAvailable: 32768000 << 10},
		},
		{
			// A parent slice allows 3 CPUs, the service 1.5: the tighter wins, rounded up to 2
			// threads; memory.max at the leaf, with 1 GiB of 4 in use.
			name: "cgroup v2 nested limits",
			files: map[string]string{
				"proc/self/cgroup":                                         "0::/system.slice/inferd.service\n",
				"proc/self/mountinfo":                                      mountsV2,
				"sys/fs/cgroup/system.slice/cpu.max":                       "300000 100000\n",
				"sys/fs/cgroup/system.slice/inferd.service/cpu.max":        "150000 100000\n",
				"sys/fs/cgroup/system.slice/memory.max":                    "max\n",
				"sys/fs/cgroup/system.slice/inferd.service/memory.max":     "4294967296\n",
				"sys/fs/cgroup/system.slice/inferd.service/memory.current": "1073741824\n",
			},
			mask:    all,
			wantCPU: CPU{Affinity: 8, Quota: 1.5, Threads: 2, Cores: 2},
			wantMem: Memory{Total: 65536000 << 10, Available: 32768000 << 10, Limit: 4 << 30, Usage: 1 << 30, UsableTotal: 4 << 30, UsableAvailable: 3 << 30},
		},
		{
			name: "cgroup v2 without a limit, affinity to one socket's siblings",
			files: map[string]string{
				"proc/self/cgroup":                    "0::/user.slice\n",
				"proc/self/mountinfo":                 mountsV2,
				"sys/fs/cgroup/user.slice/cpu.max":    "max 100000\n",
				"sys/fs/cgroup/user.slice/memory.max": "max\n",
			},
			mask:    []int{0, 1, 2},
			wantCPU: CPU{Affinity: 3, Threads: 3, Cores: 2},
			wantMem: Memory{Total: 65536000 << 10, Available: 32768000 << 10, UsableTotal: 65536000 << 10, UsableAvailable: 32768000 << 10},
		},
		{
			// Like the machine this was written on: v1 controllers beside an empty unified tree.
			name: "cgroup v1 hybrid",
			files: map[string]string{
				"proc/self/cgroup":                                         "4:memory:/process_api/x\n2:cpuacct:/\n1:cpu:/\n0::/\n",
				"proc/self/mountinfo":                                      mountsHybrid,
				"sys/fs/cgroup/cpu/cpu.cfs_quota_us":                       "400000\n",
				"sys/fs/cgroup/cpu/cpu.cfs_period_us":                      "100000\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":               "9223372036854771712\n",
				"sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": "8589934592\n",
				"sys/fs/cgroup/memory/process_api/x/memory.usage_in_bytes": "10737418240\n", // over: nothing left
			},
			mask:    all,
			wantCPU: CPU{Affinity: 8, Quota: 4, Threads: 4, Cores: 4},
			wantMem: Memory{Total: 65536000 << 10, Available: 32768000 << 10, Limit: 8 << 30, Usage: 10 << 30, UsableTotal: 8 << 30, UsableAvailable: 0},
		},
		{
			name: "cgroup v1 in a container without a cgroup namespace",
			files: map[string]string{
				"proc/self/cgroup":                            "5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
				"proc/self/mountinfo":                         mountsContainerV1,
				"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":  "50000\n",
				"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
				"sys/fs/cgroup/memory/memory.limit_in_bytes":  "2147483648\n",
				"sys/fs/cgroup/memory/memory.usage_in_bytes":  "536870912\n",
			},
			mask:    all,
			wantCPU: CPU{Affinity: 8, Quota: 0.5, Threads: 1, Cores: 1},
			wantMem: Memory{Total: 65536000 << 10, Available: 32768000 << 10, Limit: 2 << 30, Usage: 512 << 20, UsableTotal: 2 << 30, UsableAvailable: 1536 << 20},
		},
		{
			name:    "no /proc/self/cgroup at all",
			mask:    []int{4, 6},
			wantCPU: CPU{Affinity: 2, Threads: 2, Cores: 2},
			wantMem: Memory{Total: 65536000 << 10, Available: 32768000 << 10, UsableTotal: 65536000 << 10, UsableAvailable: 32768000 << 10},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := Read(Source{FS: fixture(tc.files), Affinity: func() ([]int, error) { return tc.mask, nil }})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.wantCPU
			want.Model, want.Online = "Intel(R) Xeon(R) Platinum 8480+", 8
			want.Features = []string{"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
			got := info.CPU
			if !slices.Equal(got.Features, want.Features) {
				t.Errorf("features %v, want %v", got.Features, want.Features)
			}
			got.Features, want.Features = nil, nil
			if got.Model != want.Model || got.Online != want.Online || got.Affinity != want.Affinity || got.Quota != want.Quota ||
				got.Threads != want.Threads || got.Cores != want.Cores {
				t.Errorf("CPU = %+v, want %+v", got, want)
			}
			if info.Memory != tc.wantMem {
				t.Errorf("Memory = %+v, want %+v", info.Memory, tc.wantMem)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"", "max 100000 9", "abc 100000", "100 0"} {
		if _, err := parseCPUMax(s); err == nil {
			t.Errorf("parseCPUMax(%q) accepted", s)
		}
	}
	for s, want := range map[string]int{"0": 1, "0-7": 8, "0-3,8-11": 8, "0,2,4": 3} {
		if got, err := parseCPUList(s); err != nil || got != want {
			t.Errorf("parseCPUList(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "3-1", "a"} {
		if _, err := parseCPUList(s); err == nil {
			t.Errorf("parseCPUList(%q) accepted", s)
		}
	}
	if _, err := parseMeminfo("MemFree: 1 kB\n"); err == nil {
		t.Error("meminfo without MemTotal accepted")
	}
	if _, err := Read(Source{FS: fstest.MapFS{}, Affinity: func() ([]int, error) { return []int{0}, nil }}); err == nil {
		t.Error("Read without /proc/cpuinfo succeeded")
	}
	if got := unescape(`/mnt/with\040space`); got != "/mnt/with space" {
		t.Errorf("unescape = %q", got)
	}
}

// TestDetectThisMachine checks Detect against what this machine says elsewhere: the model
// name and flags in /proc/cpuinfo, Go's own view of the CPUs, and /proc/meminfo.
func TestDetectThisMachine(t *testing.T) {
	info, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", info)
	model, flags := firstCPUInfo(t)
	c := info.CPU
	if c.Model != model {
		t.Errorf("model %q, /proc/cpuinfo says %q", c.Model, model)
	}
	// Go reads the same affinity mask at start (and nothing here changed it).
	if c.Affinity != runtime.NumCPU() {
		t.Errorf("affinity %d CPUs, runtime.NumCPU() = %d", c.Affinity, runtime.NumCPU())
	}
	if c.Threads < 1 || c.Threads > c.Affinity || c.Cores < 1 || c.Cores > c.Threads || c.Online < c.Affinity {
		t.Errorf("inconsistent counts: %+v", c)
	}
	if c.GOMAXPROCS != runtime.GOMAXPROCS(0) {
		t.Errorf("GOMAXPROCS %d, want %d", c.GOMAXPROCS, runtime.GOMAXPROCS(0))
	}
	if c.Quota > 0 && float64(c.Threads) < c.Quota {
		t.Errorf("threads %d below the quota %v", c.Threads, c.Quota)
	}
	// CPUID (with the OS's consent) and the kernel's flags agree on the extensions ORT uses.
	for _, f := range []string{"avx2", "avx512f", "amx_tile"} {
		if runtime.GOARCH != "amd64" {
			break
		}
		if slices.Contains(c.Features, f) != slices.Contains(flags, f) {
			t.Errorf("feature %s: CPUID says %v, /proc/cpuinfo says %v", f, slices.Contains(c.Features, f), slices.Contains(flags, f))
		}
	}
	m, err := DetectMemory()
	if err != nil {
		t.Fatal(err)
	}
	if m.Total != info.Memory.Total || m.Limit != info.Memory.Limit {
		t.Errorf("DetectMemory %+v disagrees with Detect %+v", m, info.Memory)
	}
	if m.Total == 0 || m.Available > m.Total || m.UsableTotal > m.Total || m.UsableAvailable > m.Available {
		t.Errorf("inconsistent memory: %+v", m)
	}
}

func firstCPUInfo(t *testing.T) (model string, flags []string) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch strings.TrimSpace(k) {
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		case "flags":
			if flags == nil {
				flags = strings.Fields(v)
			}
		}
	}
	return model, flags
}
