package kservehttp_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservehttp"
)

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for the condition
	}
}

// stalled is a request whose Content-Length promises length bytes of which only sent arrive;
// the rest never come until the returned function ends the body with an error.
func stalled(t *testing.T, length int64, sent []byte, headerLength int) (*http.Request, func()) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(sent) }()
	r := httptest.NewRequest(http.MethodPost, "/v2/models/m/infer", pr)
	r.ContentLength = length
	if headerLength >= 0 {
		r.Header.Set(kserve.HeaderContentLength, strconv.Itoa(headerLength))
	}
	return r, func() { pw.CloseWithError(errors.New("client went away")) }
}

// TestReadGrowsAsBytesArrive sends bodies that announce 64 MiB and stall after a few bytes, as
// JSON and as binary tensors: what they hold of the budget (the memory of their buffers) stays
// near the first 32 KiB, not the 64 MiB announced, and all of it comes back when they fail.
func TestReadGrowsAsBytesArrive(t *testing.T) {
	const announced = 64 << 20
	hdr := `{"inputs":[{"name":"x","datatype":"FP32","shape":[16777216],"parameters":{"binary_data_size":67108864}}]}`
	cases := []struct {
		name string
		sent []byte
		hl   int
	}{
		{"JSON", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[1,`), -1},
		{"binary", append([]byte(hdr), make([]byte, 100)...), len(hdr)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, pool := range []*kservehttp.Pool{nil, new(kservehttp.Pool)} {
				budget := kservehttp.NewBudget(func() int64 { return 1 << 30 })
				r, hangUp := stalled(t, announced+int64(c.hl)*boolInt(c.hl >= 0), c.sent, c.hl)
				done := make(chan error, 1)
				go func() {
					_, err := kservehttp.Read(httptest.NewRecorder(), r, kservehttp.Options{Limit: 128 << 20, Pool: pool, Budget: budget})
					done <- err
				}()
				eventually(t, "the first bytes to be reserved", func() bool { return budget.InUse() > 0 })
				if n := budget.InUse(); n > 64<<10 {
					t.Errorf("a stalled body of %d bytes announced holds %d bytes, want at most 64 KiB", announced, n)
				}
				hangUp()
				if err := <-done; err == nil {
					t.Error("Read of a body whose client went away succeeded")
				}
				if n := budget.InUse(); n != 0 {
					t.Errorf("after the failed read %d bytes stay reserved", n)
				}
			}
		})
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TestBudget fills a budget with one body in flight: the next body is refused with a 503 that
// names server.max_body_bytes_in_flight and asks for a retry, while the first stays whole; once
// it is released (twice, harmlessly) the next one is read, and raising the limit (a reload)
// lets two in at once.
func TestBudget(t *testing.T) {
	body, hl := binaryRequest()
	var limit atomic.Int64
	limit.Store(10 << 10)
	budget := kservehttp.NewBudget(limit.Load)
	var pool kservehttp.Pool
	read := func() (*kservehttp.Body, error) {
		return kservehttp.Read(httptest.NewRecorder(), post(body, hl), kservehttp.Options{Limit: 1 << 20, Pool: &pool, Budget: budget})
	}
	first, err := read()
	if err != nil {
		t.Fatal(err)
	}
	held := budget.InUse()
	if held <= 0 {
		t.Fatalf("a body in flight holds %d bytes of the budget", held)
	}
	_, err = read()
	var be *kservehttp.Error
	if !errors.As(err, &be) || be.Status != http.StatusServiceUnavailable || !be.RetryAfter ||
		be.Limit != "max_body_bytes_in_flight" || !errors.Is(err, kservehttp.ErrBudgetFull) {
		t.Fatalf("second body over a full budget: %v, want a 503 over max_body_bytes_in_flight", err)
	}
	if budget.InUse() != held {
		t.Errorf("the refused body left %d bytes reserved, want the first body's %d", budget.InUse(), held)
	}
	first.Release()
	first.Release()
	if n := budget.InUse(); n != 0 {
		t.Fatalf("after Release %d bytes stay reserved", n)
	}
	second, err := read()
	if err != nil {
		t.Fatalf("after the first body was released: %v", err)
	}
	limit.Store(1 << 20)
	third, err := read()
	if err != nil {
		t.Fatalf("after raising the limit: %v", err)
	}
	second.Release()
	third.Release()
	if n := budget.InUse(); n != 0 {
		t.Errorf("after every body was released %d bytes stay reserved", n)
	}
	limit.Store(1 << 10)
	_, err = read()
	if !errors.As(err, &be) || be.Status != http.StatusRequestEntityTooLarge || be.RetryAfter || be.Limit != "max_body_bytes_in_flight" {
		t.Errorf("a body that an empty budget cannot hold: %v, want a 413 over max_body_bytes_in_flight", err)
	}
}

// TestBudgetHandedOn checks that a body handed on by a router is counted once: the handler's
// Release of what it got leaves the reservation to the router, whose Release gives it back.
func TestBudgetHandedOn(t *testing.T) {
	body, hl := binaryRequest()
	budget := kservehttp.NewBudget(func() int64 { return 1 << 20 })
	routed, err := kservehttp.Read(httptest.NewRecorder(), post(body, hl), kservehttp.Options{Limit: 1 << 20, Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	held := budget.InUse()
	r := post(nil, hl)
	r.Body = routed.Reader()
	served, err := kservehttp.Read(httptest.NewRecorder(), r, kservehttp.Options{Limit: 1 << 20, Pool: new(kservehttp.Pool), Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	if budget.InUse() != held {
		t.Errorf("the handed-on body was counted again: %d bytes in use, want %d", budget.InUse(), held)
	}
	served.Release()
	if budget.InUse() != held {
		t.Errorf("the handler's Release gave back the router's reservation: %d in use, want %d", budget.InUse(), held)
	}
	routed.Release()
	if n := budget.InUse(); n != 0 {
		t.Errorf("after the router's Release %d bytes stay reserved", n)
	}
}

// TestPoolBoundedAfterBurst reads a burst of concurrent bodies of 1 MiB and of 16 MiB and
// releases them all: the pool then keeps at most its cap of idle buffers (the 16 MiB ones are
// not pooled at all), and the pool still serves the next body.
func TestPoolBoundedAfterBurst(t *testing.T) {
	for _, size := range []int{1 << 20, 16 << 20} {
		pool := &kservehttp.Pool{MaxBytes: 8 << 20}
		hdr := `{"inputs":[{"name":"x","datatype":"UINT8","shape":[` + strconv.Itoa(size) + `],"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]}`
		body := append([]byte(hdr), make([]byte, size)...)
		const burst = 24
		bodies := make([]*kservehttp.Body, burst)
		var wg sync.WaitGroup
		for i := range burst {
			wg.Go(func() {
				b, err := kservehttp.Read(httptest.NewRecorder(), post(body, len(hdr)), kservehttp.Options{Limit: 32 << 20, Pool: pool})
				if err != nil {
					t.Error(err)
					return
				}
				bodies[i] = b
			})
		}
		wg.Wait()
		for _, b := range bodies {
			if b != nil {
				b.Release()
			}
		}
		if n := pool.IdleBytes(); n > 8<<20 {
			t.Errorf("%d-byte bodies: the pool keeps %d idle bytes, over its cap of 8 MiB", size, n)
		}
		b, err := kservehttp.Read(httptest.NewRecorder(), post(body, len(hdr)), kservehttp.Options{Limit: 32 << 20, Pool: pool})
		if err != nil || b.Len() != int64(len(body)) {
			t.Fatalf("after the burst: %v", err)
		}
		b.Release()
	}
}
