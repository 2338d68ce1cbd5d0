package hostinfo

import (
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// CPUTimes are the host's cumulative CPU times in clock ticks, all CPUs together, from the
// first line of /proc/stat. Two readings give the utilization in between.
type CPUTimes struct {
	Busy, Total uint64
}

// Utilization is the busy share of the time between earlier and t, 0 to 1; false when no time
// passed (or the counters went back).
func (t CPUTimes) Utilization(earlier CPUTimes) (float64, bool) {
	if t.Total <= earlier.Total || t.Busy < earlier.Busy {
		return 0, false
	}
	return min(float64(t.Busy-earlier.Busy)/float64(t.Total-earlier.Total), 1), true
}

// DetectCPUTimes reads the running machine's CPU times.
func DetectCPUTimes() (CPUTimes, error) { return readCPUTimes(os.DirFS("/")) }

func readCPUTimes(fsys fs.FS) (CPUTimes, error) {
	data, err := fs.ReadFile(fsys, "proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	return parseCPUTimes(string(data))
}

// parseCPUTimes reads "cpu user nice system idle iowait irq softirq steal guest guest_nice";
// idle and iowait are idle, guest time is already inside user and nice.
func parseCPUTimes(text string) (CPUTimes, error) {
	line, _, _ := strings.Cut(text, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return CPUTimes{}, fmt.Errorf("/proc/stat: first line %q is not the cpu totals", line)
	}
	var t CPUTimes
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
		}
		t.Total += v
		if i != 3 && i != 4 { // idle, iowait
			t.Busy += v
		}
	}
	return t, nil
}
