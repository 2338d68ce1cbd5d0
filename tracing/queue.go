package tracing

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Counters are the span counts of every generation of a Tracing, which the daemon reads for
// /metrics. They only grow.
type Counters struct {
	// Exported spans the collector accepted.
	Exported atomic.Uint64
	// DroppedQueueFull spans found the export queue full (the collector down or slow).
	DroppedQueueFull atomic.Uint64
	// DroppedExportFailed spans were in a batch the collector refused or did not answer in time.
	DroppedExportFailed atomic.Uint64
	// DroppedShutdown spans were still queued when a generation was shut down and its flush ran
	// out of time.
	DroppedShutdown atomic.Uint64
}

// queueOptions bound a queueProcessor.
type queueOptions struct {
	// Size is the most ended spans waiting for export; more are dropped.
	Size int
	// Batch is the most spans one export sends.
	Batch int
	// Delay is how long a partial batch waits for more spans before it is sent.
	Delay time.Duration
	// Timeout bounds one export.
	Timeout time.Duration
}

// queueProcessor is the span processor of a generation: ended spans go into a bounded
// channel without blocking (OnEnd never waits), and one goroutine exports them in batches.
// A full channel drops the span and counts it, which is what the SDK's BatchSpanProcessor does
// silently. Its memory is the channel and one batch; its goroutines, one, whatever the
// collector does: an export that fails is counted and not retried (the exporter's own retries
// are off), so an unreachable collector costs one export timeout per batch and nothing grows.
type queueProcessor struct {
	exp  sdktrace.SpanExporter
	opts queueOptions
	cnt  *Counters
	log  *slog.Logger

	spans chan sdktrace.ReadOnlySpan
	flush chan chan struct{} // a request to export what is queued now
	stop  chan struct{}      // closed by Shutdown
	done  chan struct{}      // closed when the export loop has returned

	stopOnce sync.Once
	failing  atomic.Bool // the last export failed: logged once until one succeeds
}

func newQueueProcessor(exp sdktrace.SpanExporter, opts queueOptions, cnt *Counters, log *slog.Logger) *queueProcessor {
	p := &queueProcessor{
		exp: exp, opts: opts, cnt: cnt, log: log,
		spans: make(chan sdktrace.ReadOnlySpan, opts.Size),
		flush: make(chan chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go p.loop()
	return p
}

func (p *queueProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span for export, or drops it when the queue is full.
func (p *queueProcessor) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case <-p.stop:
		p.cnt.DroppedShutdown.Add(1)
		return
	default:
	}
	select {
	case p.spans <- s:
	default:
		p.cnt.DroppedQueueFull.Add(1)
	}
}

// loop gathers batches and exports them until Shutdown.
func (p *queueProcessor) loop() {
	defer close(p.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, p.opts.Batch)
	timer := time.NewTimer(p.opts.Delay)
	defer timer.Stop()
	send := func() {
		if len(batch) > 0 {
			p.export(batch)
			clear(batch)
			batch = batch[:0]
		}
	}
	for {
		select {
		case s := <-p.spans:
			batch = append(batch, s)
			if len(batch) == p.opts.Batch {
				send()
				timer.Reset(p.opts.Delay)
			}
		case <-timer.C:
			send()
			timer.Reset(p.opts.Delay)
		case ack := <-p.flush:
			p.drain(&batch, send)
			close(ack)
		case <-p.stop:
			p.drain(&batch, send)
			return
		}
	}
}

// drain exports everything queued now.
func (p *queueProcessor) drain(batch *[]sdktrace.ReadOnlySpan, send func()) {
	for {
		select {
		case s := <-p.spans:
			*batch = append(*batch, s)
			if len(*batch) == p.opts.Batch {
				send()
			}
		default:
			send()
			return
		}
	}
}

// export sends one batch within the export timeout; the spans of a failed export are counted
// as dropped.
func (p *queueProcessor) export(batch []sdktrace.ReadOnlySpan) {
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.Timeout)
	err := p.exp.ExportSpans(ctx, batch)
	cancel()
	if err != nil {
		p.cnt.DroppedExportFailed.Add(uint64(len(batch)))
		if !p.failing.Swap(true) {
			p.log.Warn("exporting trace spans failed; dropping spans until the collector answers", "spans", len(batch), "err", err)
		}
		return
	}
	p.cnt.Exported.Add(uint64(len(batch)))
	if p.failing.Swap(false) {
		p.log.Info("exporting trace spans works again")
	}
}

// ForceFlush exports what is queued now, within ctx.
func (p *queueProcessor) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case p.flush <- ack:
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued within ctx, then shuts the exporter down. Spans that end
// after it are dropped and counted.
func (p *queueProcessor) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.stop) })
	var err error
	select {
	case <-p.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		// The loop is stuck in an export; what it still holds is lost.
		p.cnt.DroppedShutdown.Add(uint64(len(p.spans)))
	}
	return errors.Join(err, p.exp.Shutdown(ctx))
}
