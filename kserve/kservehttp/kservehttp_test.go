package kservehttp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservehttp"
)

// binaryRequest is a body with binary FP16 (6 bytes), FP32 (12), BYTES (5), INT64 and FP64
// inputs: on the wire, only the first starts where the JSON part ends, and none of the others
// is 8-byte aligned relative to it.
func binaryRequest() (body []byte, headerLength int) {
	in := func(name, dt string, n, size int) string {
		return `{"name":"` + name + `","datatype":"` + dt + `","shape":[` + strconv.Itoa(n) +
			`],"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}`
	}
	hdr := `{"inputs":[` + in("h", "FP16", 3, 6) + "," + in("f", "FP32", 3, 12) + "," + in("s", "BYTES", 1, 5) + "," +
		in("i", "INT64", 1, 8) + "," + in("d", "FP64", 1, 8) + `]}`
	body = append([]byte(hdr), make([]byte, 6)...)
	for _, f := range []float32{1, 2, 3} {
		body = binary.LittleEndian.AppendUint32(body, *(*uint32)(unsafe.Pointer(&f)))
	}
	body = append(body, 1, 0, 0, 0, 'x')
	body = binary.LittleEndian.AppendUint64(body, 7)
	body = binary.LittleEndian.AppendUint64(body, 0x3ff0000000000000) // 1.0
	return body, len(hdr)
}

func post(body []byte, headerLength int) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v2/models/m/infer", bytes.NewReader(body))
	if headerLength >= 0 {
		r.Header.Set(kserve.HeaderContentLength, strconv.Itoa(headerLength))
	}
	return r
}

func aligned(b []byte) bool { return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 == 0 }

func TestReadAlignsBinaryTensors(t *testing.T) {
	body, hl := binaryRequest()
	for _, pool := range []*kservehttp.Pool{nil, new(kservehttp.Pool)} {
		b, err := kservehttp.Read(httptest.NewRecorder(), post(body, hl), kservehttp.Options{Limit: 1 << 20, Pool: pool})
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Join(b.Parts(), nil); !bytes.Equal(got, body) || b.Len() != int64(len(body)) {
			t.Fatalf("parts hold %q (%d), want the body", got, b.Len())
		}
		req, err := kserve.DecodeLimited(b.Parts(), hl, kserve.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range req.Inputs {
			if in.Tensor.Data != nil && !aligned(in.Tensor.Data) {
				t.Errorf("input %q is not 8-byte aligned", in.Tensor.Name)
			}
			if in.Tensor.Data != nil && !inParts(b.Parts(), in.Tensor.Data) {
				t.Errorf("input %q was copied out of the body", in.Tensor.Name)
			}
		}
		b.Release()
	}
}

func inParts(parts [][]byte, data []byte) bool {
	for _, p := range parts {
		if len(p) > 0 && &data[0] == &p[0] {
			return true
		}
	}
	return false
}

// TestReadAsItComes checks the bodies Read cannot lay out, which the decoder must still see as
// sent (its errors then count offsets on the wire as before).
func TestReadAsItComes(t *testing.T) {
	body, hl := binaryRequest()
	cases := []struct {
		name string
		body []byte
		hl   int
	}{
		{"JSON", []byte(`{"inputs":[]}`), -1},
		{"header not JSON", []byte("{not json}\x00\x01"), 10},
		{"header past the end", body[:20], hl},
		{"short binary part", body[:len(body)-3], hl},
		{"extra bytes", append(bytes.Clone(body), 1, 2, 3), hl},
	}
	for _, c := range cases {
		b, err := kservehttp.Read(httptest.NewRecorder(), post(c.body, c.hl), kservehttp.Options{Limit: 1 << 20, Pool: new(kservehttp.Pool)})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := bytes.Join(b.Parts(), nil); !bytes.Equal(got, c.body) {
			t.Errorf("%s: parts hold %q, want %q", c.name, got, c.body)
		}
	}
}

func TestReadLimit(t *testing.T) {
	body, hl := binaryRequest()
	for _, length := range []int64{int64(len(body)), -1} {
		r := post(body, hl)
		r.ContentLength = length
		_, err := kservehttp.Read(httptest.NewRecorder(), r, kservehttp.Options{Limit: 100})
		var be *kservehttp.Error
		if !errors.As(err, &be) || be.Status != http.StatusRequestEntityTooLarge || be.Limit != "max_request_bytes" ||
			!strings.Contains(err.Error(), "limit of 100 bytes (server.max_request_bytes)") {
			t.Errorf("content length %d: Read = %v, want a 413 over max_request_bytes", length, err)
		}
	}
}

// TestHandedOn checks that a body passed on with Body.Reader is taken as it is, once, and still
// checked against the handler's own limit.
func TestHandedOn(t *testing.T) {
	body, hl := binaryRequest()
	first, err := kservehttp.Read(httptest.NewRecorder(), post(body, hl), kservehttp.Options{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := post(nil, hl)
	r.Body = first.Reader()
	if got, err := kservehttp.Read(httptest.NewRecorder(), r, kservehttp.Options{Limit: 1 << 20}); err != nil || !sameParts(got.Parts(), first.Parts()) {
		t.Errorf("Read of a handed-on body = %v, %v; want the same parts", got, err)
	}
	r.Body = first.Reader()
	if _, err := kservehttp.Read(httptest.NewRecorder(), r, kservehttp.Options{Limit: 100}); err == nil {
		t.Error("a handed-on body over the handler's limit was taken")
	}
	var sent bytes.Buffer
	if _, err := sent.ReadFrom(first.Reader()); err != nil || !bytes.Equal(sent.Bytes(), body) {
		t.Errorf("Reader gives %q, %v; want the body as sent", sent.Bytes(), err)
	}
}

func sameParts(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) || &a[i][0] != &b[i][0] {
			return false
		}
	}
	return true
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "99")
	kservehttp.WriteError(rec, http.StatusBadRequest, `input "x": bad`)
	if rec.Code != 400 || rec.Header().Get("Content-Length") != "" || rec.Body.String() != `{"error":"input \"x\": bad"}` {
		t.Errorf("got %d %v %q", rec.Code, rec.Header(), rec.Body)
	}
}

// BenchmarkRead reads a 64x1024 FP32 binary request as the API does, aligned (its JSON part is
// parsed once more to learn the tensor's size) and, for comparison, as one contiguous part.
func BenchmarkRead(b *testing.B) {
	hdr := `{"inputs":[{"name":"input","datatype":"FP32","shape":[64,1024],"parameters":{"binary_data_size":262144}}]}`
	body := append([]byte(hdr), make([]byte, 262144)...)
	var pool kservehttp.Pool
	for _, c := range []struct {
		name string
		hl   int
	}{{"aligned", len(hdr)}, {"contiguous", -1}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				body, err := kservehttp.Read(nil, post(body, c.hl), kservehttp.Options{Limit: 1 << 20, Pool: &pool})
				if err != nil {
					b.Fatal(err)
				}
				body.Release()
			}
		})
	}
}
