package metrics

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GPUSample is one GPU at the moment of a scrape. Sizes are bytes; NaN means a value the GPU
// does not report (that series is left out).
type GPUSample struct {
	Index             int
	UUID, Name        string
	PCIBusID          string
	DriverVersion     string
	CUDAVersion       string
	ComputeCapability string
	MIG               bool
	// Healthy is false once the driver lost the GPU; its other values are then not read.
	Healthy bool
	// MemoryTotal, MemoryUsed and MemoryFree are NVML's view of device memory. MemoryReserved
	// is what the driver sets aside, outside used and free; 0 where NVML does not say (the
	// series is then left out and used includes it).
	MemoryTotal, MemoryUsed, MemoryFree, MemoryReserved uint64
	// Utilization and MemoryUtilization are shares of the last sample period, 0 to 1.
	Utilization, MemoryUtilization float64
	Temperature                    float64 // Celsius
	Power, PowerLimit              float64 // watts
}

// GPUSource reads the node's GPUs when Prometheus scrapes (the daemon adapts package gpu to
// it). It must return once ctx ends, and return ErrNoGPU on a node without GPUs.
type GPUSource interface {
	GPUSamples(ctx context.Context) ([]GPUSample, error)
}

// ErrNoGPU is what a GPUSource returns on a CPU-only node: nothing to report, and not a failed
// scrape.
var ErrNoGPU = errors.New("no GPU")

// Hardware is a prometheus.Collector for the node's GPUs in node_exporter's style: descriptors
// built once, values read from the GPUSource at scrape time within a deadline, and the
// collector's own duration and success reported beside them (a GPU that hangs NVML costs the
// scrape the deadline and shows as inferd_scrape_collector_success{collector="gpu"} 0).
type Hardware struct {
	src     GPUSource
	timeout time.Duration
	log     *slog.Logger

	info, up, util, memUtil, memTotal, memUsed, memFree, memReserved, temp, power, powerLimit *prometheus.Desc
	duration, success                                                                         *prometheus.Desc
}

var _ prometheus.Collector = (*Hardware)(nil)

// NewHardware returns the collector over src; each scrape waits at most timeout for it.
func NewHardware(src GPUSource, timeout time.Duration, log *slog.Logger) *Hardware {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	labels := []string{"gpu", "uuid", "name"}
	gauge := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append(labels[:len(labels):len(labels)], extra...), nil)
	}
	return &Hardware{
		src: src, timeout: timeout, log: log,
		info: gauge("inferd_gpu_info", "A metric with a constant 1 value for each GPU, labelled with what identifies it: NVML index, UUID, name, PCI bus id, driver and CUDA versions, compute capability and MIG mode.",
			"pci_bus_id", "driver_version", "cuda_version", "compute_capability", "mig"),
		up:          gauge("inferd_gpu_up", "1 while the GPU answers NVML, 0 once the driver lost it (fallen off the bus, an XID that needs a reset); models on a lost GPU are unavailable."),
		util:        gauge("inferd_gpu_utilization_ratio", "Share of the last sample period in which a kernel ran on the GPU, 0 to 1."),
		memUtil:     gauge("inferd_gpu_memory_utilization_ratio", "Share of the last sample period in which GPU memory was read or written, 0 to 1."),
		memTotal:    gauge("inferd_gpu_memory_total_bytes", "GPU memory in total."),
		memUsed:     gauge("inferd_gpu_memory_used_bytes", "GPU memory that allocations hold, by every process (nvidia-smi's used)."),
		memReserved: gauge("inferd_gpu_memory_reserved_bytes", "GPU memory the driver and firmware set aside, which nothing can allocate; total = used + free + reserved."),
		memFree:     gauge("inferd_gpu_memory_free_bytes", "GPU memory free, as NVML reports it."),
		temp:        gauge("inferd_gpu_temperature_celsius", "GPU core temperature."),
		power:       gauge("inferd_gpu_power_watts", "Power the GPU draws."),
		powerLimit:  gauge("inferd_gpu_power_limit_watts", "Power limit the driver enforces on the GPU."),
		duration: prometheus.NewDesc("inferd_scrape_collector_duration_seconds",
			"How long a hardware collector took to read at this scrape.", []string{"collector"}, nil),
		success: prometheus.NewDesc("inferd_scrape_collector_success",
			"1 if a hardware collector read everything at this scrape, 0 if it failed or ran out of time.", []string{"collector"}, nil),
	}
}

// Describe sends every descriptor.
func (h *Hardware) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{h.info, h.up, h.util, h.memUtil, h.memTotal, h.memUsed, h.memFree, h.memReserved,
		h.temp, h.power, h.powerLimit, h.duration, h.success} {
		ch <- d
	}
}

// Collect reads the GPUs now, within the timeout.
func (h *Hardware) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	start := time.Now()
	samples, err := h.src.GPUSamples(ctx)
	ok := 1.0
	switch {
	case errors.Is(err, ErrNoGPU):
		samples = nil
	case err != nil:
		h.log.Warn("reading GPU telemetry for /metrics failed", "err", err)
		samples, ok = nil, 0
	}
	for _, s := range samples {
		h.collectGPU(ch, s)
	}
	ch <- prometheus.MustNewConstMetric(h.duration, prometheus.GaugeValue, time.Since(start).Seconds(), "gpu")
	ch <- prometheus.MustNewConstMetric(h.success, prometheus.GaugeValue, ok, "gpu")
}

func (h *Hardware) collectGPU(ch chan<- prometheus.Metric, s GPUSample) {
	labels := []string{strconv.Itoa(s.Index), s.UUID, s.Name}
	ch <- prometheus.MustNewConstMetric(h.info, prometheus.GaugeValue, 1, append(labels,
		s.PCIBusID, s.DriverVersion, s.CUDAVersion, s.ComputeCapability, strconv.FormatBool(s.MIG))...)
	up := 0.0
	if s.Healthy {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(h.up, prometheus.GaugeValue, up, labels...)
	if !s.Healthy {
		return
	}
	for _, m := range []struct {
		desc  *prometheus.Desc
		value float64
	}{
		{h.memTotal, float64(s.MemoryTotal)},
		{h.memUsed, float64(s.MemoryUsed)},
		{h.memFree, float64(s.MemoryFree)},
		{h.memReserved, reservedOrNaN(s.MemoryReserved)},
		{h.util, s.Utilization},
		{h.memUtil, s.MemoryUtilization},
		{h.temp, s.Temperature},
		{h.power, s.Power},
		{h.powerLimit, s.PowerLimit},
	} {
		if !math.IsNaN(m.value) {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, m.value, labels...)
		}
	}
}

// reservedOrNaN leaves the reserved series out where NVML did not report it.
func reservedOrNaN(b uint64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(b)
}
