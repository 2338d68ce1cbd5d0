package route

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkForward measures what the router adds. in-process: the local handler called
// directly against the router serving locally (the router's own work: choice, body buffering,
// 503 interception). http: a client calling the local handler's server, the router's server
// serving locally, and the router forwarding to a peer over loopback (one more HTTP hop).
// Compare the sub-benchmarks of one run; the body is a 4 KiB binary request.
func BenchmarkForward(b *testing.B) {
	body := append([]byte(`{"inputs":[{"name":"x","shape":[1024],"datatype":"FP32","parameters":{"binary_data_size":4096}}]}`), make([]byte, 4096)...)
	local := &echo{name: "n0"}
	peer := startPeer(b, "n1")
	here := &fakeMembers{}
	here.set(member("n0", "", true, ready("m", "1")), member("n1", peer.addr(), false, ready("m", "1")))
	away := &fakeMembers{}
	away.set(member("n0", "", true), member("n1", peer.addr(), false, ready("m", "1")))
	routedLocal := newRouter(b, local, here, nil, Options{})
	routedForward := newRouter(b, local, away, nil, Options{})

	b.Run("in-process/direct", func(b *testing.B) { benchHandler(b, local, body) })
	b.Run("in-process/routed-local", func(b *testing.B) { benchHandler(b, routedLocal, body) })

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(client.CloseIdleConnections)
	for _, s := range []struct {
		name string
		h    http.Handler
	}{{"http/direct", local}, {"http/routed-local", routedLocal}, {"http/routed-forward", routedForward}} {
		srv := httptest.NewServer(s.h)
		b.Cleanup(srv.Close)
		b.Run(s.name, func(b *testing.B) {
			url := srv.URL + "/v2/models/m/infer"
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}

func benchHandler(b *testing.B, h http.Handler, body []byte) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v2/models/m/infer", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
