package hostinfo

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// ortFeatureFlags are the /proc/cpuinfo flags worth reporting, in the order reported.
var ortFeatureFlags = []string{"avx2", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
	"amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2", "i8mm"}

// ortFeatures picks the flags of ortFeatureFlags that flags holds.
func ortFeatures(flags []string) []string {
	var out []string
	for _, f := range ortFeatureFlags {
		if slices.Contains(flags, f) {
			out = append(out, f)
		}
	}
	return out
}

// processor is one "processor" block of /proc/cpuinfo.
type processor struct{ pkg, core int }

type cpuInfo struct {
	model string
	flags []string          // of the first processor (x86 "flags", arm64 "Features")
	byCPU map[int]processor // by processor number
}

func readCPUInfo(fsys fs.FS) (cpuInfo, error) {
	data, err := fs.ReadFile(fsys, "proc/cpuinfo")
	if err != nil {
		return cpuInfo{}, fmt.Errorf("hostinfo: %w", err)
	}
	return parseCPUInfo(string(data)), nil
}

// parseCPUInfo reads /proc/cpuinfo: blocks separated by blank lines, "key\t: value" lines.
func parseCPUInfo(text string) cpuInfo {
	info := cpuInfo{byCPU: map[int]processor{}}
	cur, num := processor{pkg: -1, core: -1}, -1
	flush := func() {
		if num >= 0 {
			info.byCPU[num] = cur
		}
		cur, num = processor{pkg: -1, core: -1}, -1
	}
	for line := range strings.Lines(text) {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			if strings.TrimSpace(line) == "" {
				flush()
			}
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "processor":
			if n, err := strconv.Atoi(value); err == nil {
				num = n
			}
		case "physical id":
			cur.pkg, _ = strconv.Atoi(value)
		case "core id":
			cur.core, _ = strconv.Atoi(value)
		case "model name", "Model name":
			if info.model == "" {
				info.model = value
			}
		case "flags", "Features":
			if info.flags == nil {
				info.flags = strings.Fields(value)
			}
		}
	}
	flush()
	for n, p := range info.byCPU {
		if p.pkg < 0 || p.core < 0 {
			// No topology in cpuinfo: every processor counts as its own core.
			info.byCPU[n] = processor{pkg: -1, core: n}
		}
	}
	return info
}

// readOnline counts /sys/devices/system/cpu/online ("0-3,8-11").
func readOnline(fsys fs.FS) (int, error) {
	data, err := fs.ReadFile(fsys, "sys/devices/system/cpu/online")
	if err != nil {
		return 0, err
	}
	return parseCPUList(strings.TrimSpace(string(data)))
}

func parseCPUList(s string) (int, error) {
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("hostinfo: cpu list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0, fmt.Errorf("hostinfo: cpu list %q: bad range %q", s, part)
			}
		}
		n += b - a + 1
	}
	return n, nil
}

func readMeminfo(fsys fs.FS) (Memory, error) {
	data, err := fs.ReadFile(fsys, "proc/meminfo")
	if err != nil {
		return Memory{}, fmt.Errorf("hostinfo: %w", err)
	}
	return parseMeminfo(string(data))
}

// parseMeminfo reads MemTotal and MemAvailable ("MemTotal:  24684084 kB").
func parseMeminfo(text string) (Memory, error) {
	var m Memory
	for line := range strings.Lines(text) {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "MemTotal":
			dst = &m.Total
		case "MemAvailable":
			dst = &m.Available
		default:
			continue
		}
		f := strings.Fields(value)
		if len(f) == 0 {
			return m, fmt.Errorf("hostinfo: meminfo %s has no value", key)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("hostinfo: meminfo %s: %w", key, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		*dst = n
	}
	if m.Total == 0 {
		return m, errors.New("hostinfo: /proc/meminfo has no MemTotal")
	}
	return m, nil
}

// cgroups is where this process's cgroups lie in the file system, per controller.
type cgroups struct {
	// v1 maps a v1 controller ("cpu", "memory") to its directory; v2 is the unified
	// hierarchy's directory ("" when not mounted). mount1 and mount2 are the mount points,
	// where the walk up a hierarchy stops.
	v1     map[string]string
	mount1 map[string]string
	v2     string
	mount2 string
}

func readCgroups(fsys fs.FS) (cgroups, error) {
	self, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if errors.Is(err, fs.ErrNotExist) {
		return cgroups{}, nil // no cgroups: no limits
	}
	if err != nil {
		return cgroups{}, fmt.Errorf("hostinfo: %w", err)
	}
	mounts, err := fs.ReadFile(fsys, "proc/self/mountinfo")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return cgroups{}, fmt.Errorf("hostinfo: %w", err)
	}
	return parseCgroups(string(self), string(mounts)), nil
}

// mount is one cgroup line of /proc/self/mountinfo.
type mount struct {
	root, point string
	v2          bool
	controllers []string // v1 super options naming controllers
}

// parseCgroups joins /proc/self/cgroup ("4:memory:/a/b", "0::/a/b") with the cgroup mounts of
// /proc/self/mountinfo into directories (relative to the fs root, without a leading slash).
func parseCgroups(self, mountinfo string) cgroups {
	var mounts []mount
	for line := range strings.Lines(mountinfo) {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		m := mount{root: unescape(f[3]), point: unescape(f[4])}
		switch g[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			m.controllers = strings.Split(g[2], ",")
		default:
			continue
		}
		mounts = append(mounts, m)
	}
	cg := cgroups{v1: map[string]string{}, mount1: map[string]string{}}
	for line := range strings.Lines(self) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			for _, m := range mounts {
				if m.v2 {
					if dir, ok := within(m, parts[2]); ok {
						cg.v2, cg.mount2 = dir, strings.TrimPrefix(m.point, "/")
						break
					}
				}
			}
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			for _, m := range mounts {
				if !m.v2 && slices.Contains(m.controllers, ctrl) {
					if dir, ok := within(m, parts[2]); ok {
						cg.v1[ctrl], cg.mount1[ctrl] = dir, strings.TrimPrefix(m.point, "/")
						break
					}
				}
			}
		}
	}
	return cg
}

// within maps cgroup path p onto mount m: the part of p below the mount's root, under the mount
// point. A cgroup namespace makes p "/" while the mount root is "/"; a container without one
// has a mount root that p starts with.
func within(m mount, p string) (string, bool) {
	rel := p
	if m.root != "/" {
		r, ok := strings.CutPrefix(p, m.root)
		if !ok || (r != "" && r[0] != '/') {
			return "", false
		}
		rel = r
	}
	return strings.TrimPrefix(path.Join(m.point, rel), "/"), true
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unlimited: cgroup v1 writes "no limit" as a huge page-aligned number.
const unlimited = 1 << 62

// cpuQuota is the tightest CPU quota on the way from the process's cgroup up to the root of
// its hierarchy, in CPUs; 0 when there is none.
func (cg cgroups) cpuQuota(fsys fs.FS) (float64, error) {
	quota := 0.0
	tighter := func(q float64) {
		if q > 0 && (quota == 0 || q < quota) {
			quota = q
		}
	}
	if dir, ok := cg.v1["cpu"]; ok {
		for d := range up(dir, cg.mount1["cpu"]) {
			q, qerr := readInt(fsys, d+"/cpu.cfs_quota_us")
			p, perr := readInt(fsys, d+"/cpu.cfs_period_us")
			if qerr == nil && perr == nil && q > 0 && p > 0 {
				tighter(float64(q) / float64(p))
			}
		}
		return quota, nil
	}
	if cg.v2 == "" {
		return 0, nil
	}
	for d := range up(cg.v2, cg.mount2) {
		data, err := fs.ReadFile(fsys, d+"/cpu.max")
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("hostinfo: %w", err)
		}
		q, err := parseCPUMax(string(data))
		if err != nil {
			return 0, fmt.Errorf("hostinfo: %s/cpu.max: %w", d, err)
		}
		tighter(q)
	}
	return quota, nil
}

// parseCPUMax reads cgroup v2's cpu.max ("max 100000" or "150000 100000") in CPUs.
func parseCPUMax(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return 0, fmt.Errorf("unexpected %q", s)
	}
	if f[0] == "max" {
		return 0, nil
	}
	q, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, err
	}
	period := uint64(100000)
	if len(f) == 2 {
		if period, err = strconv.ParseUint(f[1], 10, 64); err != nil || period == 0 {
			return 0, fmt.Errorf("bad period in %q", s)
		}
	}
	return float64(q) / float64(period), nil
}

// memoryLimit is the tightest memory limit up the process's cgroup hierarchy and the usage of
// the cgroup that sets it; 0, 0 when there is none.
func (cg cgroups) memoryLimit(fsys fs.FS) (limit, usage uint64, err error) {
	dir, mnt, limitFile, usageFile := cg.v2, cg.mount2, "memory.max", "memory.current"
	if d, ok := cg.v1["memory"]; ok {
		dir, mnt, limitFile, usageFile = d, cg.mount1["memory"], "memory.limit_in_bytes", "memory.usage_in_bytes"
	}
	if dir == "" {
		return 0, 0, nil
	}
	for d := range up(dir, mnt) {
		data, err := fs.ReadFile(fsys, d+"/"+limitFile)
		if err != nil {
			continue // the root cgroup has no limit file
		}
		s := strings.TrimSpace(string(data))
		if s == "max" {
			continue
		}
		l, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("hostinfo: %s/%s: %w", d, limitFile, err)
		}
		if l >= unlimited || (limit != 0 && l >= limit) {
			continue
		}
		limit = l
		if u, err := readInt(fsys, d+"/"+usageFile); err == nil && u >= 0 {
			usage = uint64(u)
		}
	}
	return limit, usage, nil
}

// up yields dir and its parents up to and including stop.
func up(dir, stop string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for d := dir; ; d = path.Dir(d) {
			if !yield(d) || d == stop || d == "." || d == "/" || !strings.HasPrefix(d, stop) {
				return
			}
		}
	}
}

func readInt(fsys fs.FS, name string) (int64, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}
