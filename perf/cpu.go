package perf

import (
	"runtime"
	"syscall"
	"time"
)

// cpuMark is a point in wall time and in this process's CPU time.
type cpuMark struct {
	wall time.Time
	cpu  time.Duration // user + system, all threads
}

func markCPU() cpuMark {
	var ru syscall.Rusage
	m := cpuMark{wall: time.Now()}
	// RUSAGE_SELF cannot fail with a valid pointer; on error the share reads as 0.
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		m.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return m
}

// cpuShare is the fraction of the whole machine (every CPU) this process used between two marks:
// CPU time ÷ (wall time × runtime.NumCPU()). A server on the same machine had at most the rest.
func cpuShare(from, to cpuMark) float64 {
	wall := to.wall.Sub(from.wall)
	if wall <= 0 {
		return 0
	}
	return float64(to.cpu-from.cpu) / (float64(wall) * float64(runtime.NumCPU()))
}
