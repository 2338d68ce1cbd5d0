package perf_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/inferd/inferd/perf"
)

func TestPercentiles(t *testing.T) {
	// 1..100 ms, shuffled: the nearest-rank p-th percentile of 1..100 is p itself.
	samples := make([]time.Duration, 100)
	for i := range samples {
		samples[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(samples), func(i, j int) { samples[i], samples[j] = samples[j], samples[i] })
	got := perf.Summarize(samples)
	want := perf.Latency{
		Samples: 100, Mean: 50500 * time.Microsecond,
		P50: 50 * time.Millisecond, P90: 90 * time.Millisecond, P95: 95 * time.Millisecond,
		P99: 99 * time.Millisecond, Max: 100 * time.Millisecond,
	}
	if got != want {
		t.Errorf("Summarize(1..100ms) = %+v, want %+v", got, want)
	}

	small := []time.Duration{10, 20, 30, 40}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{1, 10}, {25, 10}, {26, 20}, {50, 20}, {75, 30}, {76, 40}, {99, 40}, {100, 40}} {
		if got := perf.Percentile(small, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", small, c.p, got, c.want)
		}
	}
	if got := perf.Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
	if got := perf.Summarize(nil); got != (perf.Latency{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
}

func TestParseSweep(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"1", []int{1}},
		{"1,4,16,64", []int{1, 4, 16, 64}},
		{"1:64:x2", []int{1, 2, 4, 8, 16, 32, 64}},
		{"1:64:x4", []int{1, 4, 16, 64}},
		{"1:100:x4", []int{1, 4, 16, 64}},
		{"2:5", []int{2, 3, 4, 5}},
		{"1:10:3", []int{1, 4, 7, 10}},
		{" 8 , 1:2 ", []int{8, 1, 2}},
		{"4,1:4", []int{4, 1, 2, 3}},
		{"3:3", []int{3}},
	} {
		got, err := perf.ParseSweep(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("ParseSweep(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "a", "1,,2", "4:1", "1:8:x1", "1:8:x0", "1:8:0", "1:2:3:4", "1:", ":4", "1:8:y2", "2000000", "1:5000"} {
		if got, err := perf.ParseSweep(bad); !errors.Is(err, perf.ErrSyntax) {
			t.Errorf("ParseSweep(%q) = %v, %v; want ErrSyntax", bad, got, err)
		}
	}
}

func TestParseShape(t *testing.T) {
	for _, c := range []struct {
		in   string
		name string
		want []int64
	}{
		{"x=1,3,48,192", "x", []int64{1, 3, 48, 192}},
		{"input_ids:0=2, 128", "input_ids:0", []int64{2, 128}},
		{"scale=", "scale", []int64{}},
	} {
		name, got, err := perf.ParseShape(c.in)
		if err != nil || name != c.name || !slices.Equal(got, c.want) {
			t.Errorf("ParseShape(%q) = %q %v %v; want %q %v", c.in, name, got, err, c.name, c.want)
		}
	}
	for _, bad := range []string{"x", "=1,2", "x=0", "x=-1", "x=1,,2", "x=a", "x=1.5", "x=99999999999"} {
		if _, _, err := perf.ParseShape(bad); !errors.Is(err, perf.ErrSyntax) {
			t.Errorf("ParseShape(%q): err = %v, want ErrSyntax", bad, err)
		}
	}
}

func TestParseDataMode(t *testing.T) {
	for _, ok := range []string{"random", "zero"} {
		if m, err := perf.ParseDataMode(ok); err != nil || string(m) != ok {
			t.Errorf("ParseDataMode(%q) = %q, %v", ok, m, err)
		}
	}
	if _, err := perf.ParseDataMode("ones"); !errors.Is(err, perf.ErrSyntax) {
		t.Errorf("ParseDataMode(ones): err = %v, want ErrSyntax", err)
	}
}
