package api_test

import (
	"encoding/binary"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/tensor"
)

// TestBinaryInputsZeroCopy sends binary FP32, INT64 and FP64 inputs whose bytes follow the JSON
// part at offsets that are not 8-byte aligned on the wire, and checks that ONNX Runtime got
// every one of them where the server read it: the runtime copied none (Runtime.InputCopies),
// and the answers are right. Read as one contiguous body, each of them would have been copied.
func TestBinaryInputsZeroCopy(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "multi/1/model.onnx", testmodels.MultiIO())
	fp64, err := testmodels.Identity(tensor.FP64)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, dir, "id_fp64/1/model.onnx", fp64)
	hs, rt := serveRepository(t, dir, api.Options{Settings: func() *api.Settings { return &api.Settings{MaxRequestBytes: 1 << 20} }})
	// Warmup runs may copy; only the requests below count.
	before := rt.InputCopies()

	// header pads the JSON part with spaces to a length of 2 mod 8, so that FP32 data right
	// after it is not 4-byte aligned on the wire, nor INT64 data 12 bytes later.
	header := func(js string, mod int) string {
		for len(js)%8 != mod {
			js += " "
		}
		return js
	}
	in := func(name, dt string, size int) string {
		return `{"name":"` + name + `","datatype":"` + dt + `","shape":[1,3],"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}`
	}

	hdr := header(`{"inputs":[`+in("x", "FP32", 12)+","+in("y", "INT64", 24)+`]}`, 2)
	body := []byte(hdr)
	for _, f := range []float32{1.5, -2, 3} {
		body = binary.LittleEndian.AppendUint32(body, math.Float32bits(f))
	}
	for _, v := range []int64{1, 2, -3} {
		body = binary.LittleEndian.AppendUint64(body, uint64(v))
	}
	r := postBinary(t, hs.URL+"/v2/models/multi/infer", body, len(hdr))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"name":"twice","datatype":"INT64","shape":[1,3],"data":[2,4,-6]`) ||
		!strings.Contains(string(r.body), `"name":"sum","datatype":"FP32","shape":[1,3],"data":[2.5,0,0]`) {
		t.Fatalf("multi: %d %s", r.status, r.body)
	}

	hdr = header(`{"inputs":[{"name":"in","datatype":"FP64","shape":[1,3],"parameters":{"binary_data_size":24}}]}`, 4)
	body = []byte(hdr)
	for _, f := range []float64{0.25, -1, 1e300} {
		body = binary.LittleEndian.AppendUint64(body, math.Float64bits(f))
	}
	r = postBinary(t, hs.URL+"/v2/models/id_fp64/infer", body, len(hdr))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"data":[0.25,-1,1e+300]`) {
		t.Fatalf("id_fp64: %d %s", r.status, r.body)
	}

	if n := rt.InputCopies() - before; n != 0 {
		t.Errorf("ONNX Runtime got %d of the binary inputs copied, want 0", n)
	}
}
