package hostinfo

import (
	"testing"
	"testing/fstest"
)

func TestCPUTimes(t *testing.T) {
	a, err := readCPUTimes(fstest.MapFS{"proc/stat": file("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")})
	if err != nil {
		t.Fatal(err)
	}
	if a.Busy != 150 || a.Total != 1000 {
		t.Fatalf("parsed %+v, want busy 150 of 1000", a)
	}
	b, _ := parseCPUTimes("cpu 400 0 50 1300 50 0 0 0\n")
	if u, ok := b.Utilization(a); !ok || u != 0.375 {
		t.Errorf("utilization %v %v, want 300 busy of 800", u, ok)
	}
	if _, ok := a.Utilization(b); ok {
		t.Error("utilization of counters that went back")
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 x 4 5"} {
		if _, err := parseCPUTimes(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := DetectCPUTimes(); err != nil {
		t.Errorf("this machine's /proc/stat: %v", err)
	}
}
