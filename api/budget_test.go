package api_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/kserve/kservehttp"
)

// TestBodyBudgetFull holds the body budget with a client that stalls mid-body: another request
// is answered at once with 503, Retry-After and a KServe error naming the key, and once the
// stalled client goes the budget is whole again and the request is served.
func TestBodyBudgetFull(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "mlp/1/model.onnx", testmodels.MLP())
	testutil.WriteFile(t, dir, "mlp/model.toml", []byte("max_batch_size = 8\n"))
	budget := kservehttp.NewBudget(func() int64 { return 34 << 10 }) // the stalled body's first 32 KiB, not 4 KiB more
	hs, _ := serveRepository(t, dir, api.Options{
		Settings:   func() *api.Settings { return &api.Settings{MaxRequestBytes: 1 << 20} },
		BodyBudget: budget,
	})
	const body = `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
	if r := do(t, "POST", hs.URL+"/v2/models/mlp/infer", body); r.status != http.StatusOK {
		t.Fatalf("with the budget free: %d %s", r.status, r.body)
	}

	c, err := net.Dial("tcp", strings.TrimPrefix(hs.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{\"inputs\":[", 1<<20)
	for deadline := time.Now().Add(10 * time.Second); budget.InUse() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the stalled body never took its first buffer")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	r := do(t, "POST", hs.URL+"/v2/models/mlp/infer", body)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" ||
		!strings.Contains(string(r.body), `"error":"request bodies in flight hold`) || !strings.Contains(string(r.body), "server.max_body_bytes_in_flight") {
		t.Errorf("while a stalled body holds the budget: %d %v %s, want 503 with Retry-After naming the key", r.status, r.header, r.body)
	}

	c.Close()
	for deadline := time.Now().Add(10 * time.Second); budget.InUse() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes stay reserved after the stalled client left", budget.InUse())
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	if r := do(t, "POST", hs.URL+"/v2/models/mlp/infer", body); r.status != http.StatusOK {
		t.Errorf("after the stalled client left: %d %s", r.status, r.body)
	}
}
