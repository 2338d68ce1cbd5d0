package metrics

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// gatherText collects c alone, as /metrics would expose it (families sorted by name), and the
// families themselves. prometheus/testutil would do this, but it needs a module go.mod lacks.
func gatherText(t *testing.T, c prometheus.Collector) (string, []*dto.MetricFamily) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	return text.String(), families
}

// only keeps the lines of an exposition that belong to the named metric families.
func only(text string, names ...string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		for _, n := range names {
			if strings.HasPrefix(line, n+"{") || strings.HasPrefix(line, n+" ") ||
				strings.HasPrefix(line, "# HELP "+n+" ") || strings.HasPrefix(line, "# TYPE "+n+" ") {
				b.WriteString(line)
				break
			}
		}
	}
	return b.String()
}

// fakeGPUs is a GPUSource that answers from a fixed list, or blocks until released or until
// the scrape's deadline.
type fakeGPUs struct {
	samples []GPUSample
	err     error
	block   chan struct{} // non-nil: wait for it (or ctx) before answering
	calls   int
}

func (f *fakeGPUs) GPUSamples(ctx context.Context) ([]GPUSample, error) {
	f.calls++
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.samples, f.err
}

func twoGPUs() []GPUSample {
	h100 := GPUSample{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:17:00.0",
		DriverVersion: "550.54.15", CUDAVersion: "12.4", ComputeCapability: "9.0", Healthy: true,
		MemoryTotal: 85899345920, MemoryUsed: 1073741824, MemoryFree: 84288733184, MemoryReserved: 536870912,
		Utilization: 0.42, MemoryUtilization: 0.1, Temperature: 35, Power: 120.5, PowerLimit: 700}
	lost := GPUSample{Index: 1, UUID: "GPU-bbbb", Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:2a:00.0",
		DriverVersion: "550.54.15", CUDAVersion: "12.4", ComputeCapability: "9.0", Healthy: false,
		Utilization: math.NaN(), MemoryUtilization: math.NaN(), Temperature: math.NaN(), Power: math.NaN(), PowerLimit: math.NaN()}
	return []GPUSample{h100, lost}
}

// hardwareExposition is what two GPUs, one of them lost, look like in /metrics. The lost GPU
// keeps its info and says up 0; values a GPU does not report (NaN) are left out.
const hardwareExposition = `# HELP inferd_gpu_info A metric with a constant 1 value for each GPU, labelled with what identifies it: NVML index, UUID, name, PCI bus id, driver and CUDA versions, compute capability and MIG mode.
# TYPE inferd_gpu_info gauge
inferd_gpu_info{compute_capability="9.0",cuda_version="12.4",driver_version="550.54.15",gpu="0",mig="false",name="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:17:00.0",uuid="GPU-aaaa"} 1
inferd_gpu_info{compute_capability="9.0",cuda_version="12.4",driver_version="550.54.15",gpu="1",mig="false",name="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:2a:00.0",uuid="GPU-bbbb"} 1
# HELP inferd_gpu_memory_free_bytes GPU memory free, as NVML reports it.
# TYPE inferd_gpu_memory_free_bytes gauge
inferd_gpu_memory_free_bytes{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 8.4288733184e+10
# HELP inferd_gpu_memory_reserved_bytes GPU memory the driver and firmware set aside, which nothing can allocate; total = used + free + reserved.
# TYPE inferd_gpu_memory_reserved_bytes gauge
inferd_gpu_memory_reserved_bytes{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 5.36870912e+08
# HELP inferd_gpu_memory_total_bytes GPU memory in total.
# TYPE inferd_gpu_memory_total_bytes gauge
inferd_gpu_memory_total_bytes{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 8.589934592e+10
# HELP inferd_gpu_memory_used_bytes GPU memory that allocations hold, by every process (nvidia-smi's used).
# TYPE inferd_gpu_memory_used_bytes gauge
inferd_gpu_memory_used_bytes{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 1.073741824e+09
# HELP inferd_gpu_memory_utilization_ratio Share of the last sample period in which GPU memory was read or written, 0 to 1.
# TYPE inferd_gpu_memory_utilization_ratio gauge
inferd_gpu_memory_utilization_ratio{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 0.1
# HELP inferd_gpu_power_limit_watts Power limit the driver enforces on the GPU.
# TYPE inferd_gpu_power_limit_watts gauge
inferd_gpu_power_limit_watts{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 700
# HELP inferd_gpu_power_watts Power the GPU draws.
# TYPE inferd_gpu_power_watts gauge
inferd_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 120.5
# HELP inferd_gpu_temperature_celsius GPU core temperature.
# TYPE inferd_gpu_temperature_celsius gauge
inferd_gpu_temperature_celsius{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 35
# HELP inferd_gpu_up 1 while the GPU answers NVML, 0 once the driver lost it (fallen off the bus, an XID that needs a reset); models on a lost GPU are unavailable.
# TYPE inferd_gpu_up gauge
inferd_gpu_up{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 1
inferd_gpu_up{gpu="1",name="NVIDIA H100 80GB HBM3",uuid="GPU-bbbb"} 0
# HELP inferd_gpu_utilization_ratio Share of the last sample period in which a kernel ran on the GPU, 0 to 1.
# TYPE inferd_gpu_utilization_ratio gauge
inferd_gpu_utilization_ratio{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-aaaa"} 0.42
# HELP inferd_scrape_collector_duration_seconds How long a hardware collector took to read at this scrape.
# TYPE inferd_scrape_collector_duration_seconds gauge
inferd_scrape_collector_duration_seconds{collector="gpu"} 0
# HELP inferd_scrape_collector_success 1 if a hardware collector read everything at this scrape, 0 if it failed or ran out of time.
# TYPE inferd_scrape_collector_success gauge
inferd_scrape_collector_success{collector="gpu"} 1
`

func TestHardwareExposition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // fake time: the scrape takes exactly 0s
		src := &fakeGPUs{samples: twoGPUs()}
		h := NewHardware(src, time.Second, nil)
		if got, _ := gatherText(t, h); got != hardwareExposition {
			t.Errorf("exposition:\n%s\nwant:\n%s", got, hardwareExposition)
		}
		if src.calls != 1 {
			t.Errorf("one scrape read the GPUs %d times", src.calls)
		}
	})
}

// TestHardwareLint runs the exposition through client_golang's linter and, where installed,
// Prometheus' promtool.
func TestHardwareLint(t *testing.T) {
	text, families := gatherText(t, NewHardware(&fakeGPUs{samples: twoGPUs()}, time.Second, nil))
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found (Debian package prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestHardwareScrapeFailures: a GPU read that hangs costs the scrape its timeout and reports
// success 0; a CPU-only node reports success 1 and no GPU series; any other failure is 0.
func TestHardwareScrapeFailures(t *testing.T) {
	tests := []struct {
		name     string
		src      *fakeGPUs
		success  float64
		duration float64
	}{
		{"hung NVML", &fakeGPUs{samples: twoGPUs()}, 0, 2},
		{"CPU-only node", &fakeGPUs{err: ErrNoGPU}, 1, 0},
		{"read failed", &fakeGPUs{err: errors.New("NVML did not answer")}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				if tc.name == "hung NVML" {
					tc.src.block = make(chan struct{}) // made in the bubble, so that waiting on it is durable
				}
				h := NewHardware(tc.src, 2*time.Second, nil)
				start := time.Now()
				want := "# HELP inferd_scrape_collector_duration_seconds How long a hardware collector took to read at this scrape.\n" +
					"# TYPE inferd_scrape_collector_duration_seconds gauge\n" +
					"inferd_scrape_collector_duration_seconds{collector=\"gpu\"} " + formatFloat(tc.duration) + "\n" +
					"# HELP inferd_scrape_collector_success 1 if a hardware collector read everything at this scrape, 0 if it failed or ran out of time.\n" +
					"# TYPE inferd_scrape_collector_success gauge\n" +
					"inferd_scrape_collector_success{collector=\"gpu\"} " + formatFloat(tc.success) + "\n"
				text, _ := gatherText(t, h)
				if got := only(text, "inferd_scrape_collector_duration_seconds", "inferd_scrape_collector_success"); got != want {
					t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
				}
				if got := time.Since(start).Seconds(); got != tc.duration {
					t.Errorf("scrape took %vs, want %vs", got, tc.duration)
				}
				if strings.Contains(text, "inferd_gpu_") {
					t.Errorf("GPU series without a successful read:\n%s", text)
				}
				if tc.src.block != nil {
					close(tc.src.block)
				}
			})
		})
	}
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestPlacements(t *testing.T) {
	p := NewPlacements(func() []ModelPlacement {
		return []ModelPlacement{
			{Model: "det", Version: "1", Provider: "CUDAExecutionProvider", GPUs: []int{1, 0, 1}},
			{Model: "cls", Version: "2", Provider: "CPUExecutionProvider", Fallback: true},
		}
	})
	want := `# HELP inferd_model_execution_provider_info A metric with a constant 1 value for each ready model version, labelled with the execution provider it runs on, its GPUs (comma-separated NVML indices) and whether it fell back to the CPU from a GPU it asked for.
# TYPE inferd_model_execution_provider_info gauge
inferd_model_execution_provider_info{cpu_fallback="false",execution_provider="CUDAExecutionProvider",gpus="0,1",model="det",version="1"} 1
inferd_model_execution_provider_info{cpu_fallback="true",execution_provider="CPUExecutionProvider",gpus="",model="cls",version="2"} 1
`
	text, families := gatherText(t, p)
	if text != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", text, want)
	}
	if problems, err := promlint.NewWithMetricFamilies(families).Lint(); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}
