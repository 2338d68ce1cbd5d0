//go:build e2e

package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
)

const (
	inferToken = "e2e-infer-token-0123456789"
	adminToken = "e2e-admin-token-0123456789"
)

// secureDaemon starts the real binary on the demo repository with HTTPS, bearer tokens and
// small limits, and returns it with a client that trusts its certificate.
func secureDaemon(t *testing.T) (*daemontest.Daemon, *http.Client, string) {
	t.Helper()
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	if err := testmodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := selfSigned(t)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key := write("cert.pem", certPEM, 0o600), write("key.pem", keyPEM, 0o600)
	tokens := write("tokens", []byte("infer "+inferToken+"\nadmin "+adminToken+"\n"), 0o600)
	cfg := write("inferd.toml", []byte(fmt.Sprintf(`
[server]
max_request_bytes = 1048576
max_header_bytes = 8192
read_timeout = "1s"
[server.tls]
cert_file = %q
key_file = %q
[models]
repository = %q
[limits]
max_inputs = 4
max_rank = 4
max_elements = 100000
max_string_bytes = 1024
max_json_depth = 16
[auth]
tokens_file = %q
`, cert, key, repo, tokens)), 0o644)
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), cfg)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	d.WaitNotified(t, "READY=1", 60*time.Second)
	return d, client, strings.Replace(d.URL, "http://", "https://", 1)
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "inferd e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

type badCase struct {
	name    string
	method  string // default POST
	path    string // default /v2/models/mlp/infer
	body    string
	headers map[string]string
	want    int
}

func mlpBody(shape, data string) string {
	return `{"inputs":[{"name":"input","datatype":"FP32","shape":` + shape + `,"data":` + data + `}]}`
}

// binaryBody is a request whose JSON header declares one input with binary_data_size and is
// followed by the given bytes; it returns the body and the header length.
func binaryBody(model, input, dtype, shape string, size int, payload []byte) (string, string) {
	header := `{"inputs":[{"name":"` + input + `","datatype":"` + dtype + `","shape":` + shape +
		`,"parameters":{"binary_data_size":` + strconv.Itoa(size) + `}}]}`
	return header + string(payload), strconv.Itoa(len(header))
}

func badCases() []badCase {
	deep := strings.Repeat("[", 20) + "1" + strings.Repeat("]", 20)
	big := `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[` + strings.Repeat("1,", 600000) + `1]}]}`
	truncBytes, truncH := binaryBody("strings", "text", "BYTES", "[1]", 8, []byte{10, 0, 0, 0, 'a', 'b', 'c', 'd'})
	shortBin, shortH := binaryBody("mlp", "input", "FP32", "[1,4]", 12, make([]byte, 12))
	pastEnd, _ := binaryBody("mlp", "input", "FP32", "[1,4]", 16, make([]byte, 16))
	longStr := make([]byte, 4+2000)
	binary.LittleEndian.PutUint32(longStr, 2000)
	longBin, longH := binaryBody("strings", "text", "BYTES", "[1]", len(longStr), longStr)
	fiveInputs := `{"inputs":[`
	for _, n := range []string{"a", "b", "c", "d"} {
		fiveInputs += `{"name":"` + n + `","datatype":"FP32","shape":[1],"data":[1]},`
	}
	fiveInputs += `{"name":"e","datatype":"FP32","shape":[1],"data":[1]}]}`
	return []badCase{
		{name: "malformed JSON", body: `{"inputs":[`, want: 400},
		{name: "not an object", body: `[]`, want: 400},
		{name: "empty body", body: ``, want: 400},
		{name: "unknown top-level field", body: `{"inputs":[],"extra":1}`, want: 400},
		{name: "unknown input field", body: `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4],"colour":"red"}]}`, want: 400},
		{name: "missing inputs", body: `{"id":"x"}`, want: 400},
		{name: "missing name", body: `{"inputs":[{"datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "missing datatype", body: `{"inputs":[{"name":"input","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "unknown datatype", body: `{"inputs":[{"name":"input","datatype":"FP33","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "wrong datatype for the model", body: `{"inputs":[{"name":"input","datatype":"INT32","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "wrong non-batch dimension", body: mlpBody("[1,5]", "[1,2,3,4,5]"), want: 400},
		{name: "negative dimension", body: mlpBody("[-1,4]", "[1,2,3,4]"), want: 400},
		{name: "dimensions overflow int64", body: mlpBody("[4294967296,4294967296,4]", "[1]"), want: 400},
		{name: "fractional dimension", body: mlpBody("[1.5,4]", "[1,2,3,4]"), want: 400},
		{name: "data count does not match shape", body: mlpBody("[2,4]", "[1,2,3,4]"), want: 400},
		{name: "string in FP32 data", body: mlpBody("[1,4]", `[1,2,"3",4]`), want: 400},
		{name: "NaN in INT64 data", path: "/v2/models/multi_io/infer", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT64","shape":[1,3],"data":[1,NaN,3]}]}`, want: 400},
		{name: "Infinity in INT64 data", path: "/v2/models/multi_io/infer", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT64","shape":[1,3],"data":[1,Infinity,3]}]}`, want: 400},
		{name: "INT64 out of range", path: "/v2/models/multi_io/infer", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT64","shape":[1,3],"data":[1,9223372036854775808,3]}]}`, want: 400},
		{name: "duplicate input names", body: `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]},{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "mismatched batch sizes across inputs", path: "/v2/models/multi_io/infer", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]},{"name":"y","datatype":"INT64","shape":[2,3],"data":[1,2,3,4,5,6]}]}`, want: 400},
		{name: "missing input of the model", path: "/v2/models/multi_io/infer", body: `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`, want: 400},
		{name: "unknown input name", body: `{"inputs":[{"name":"inptu","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "unknown requested output", body: `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}`, want: 400},
		{name: "binary_data_output not a bool", body: `{"parameters":{"binary_data_output":"yes"},"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "negative timeout parameter", body: `{"parameters":{"timeout":-5},"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, want: 400},
		{name: "bad escape in a string", path: "/v2/models/strings/infer", body: `{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["\x"]}]}`, want: 400},
		{name: "binary size not shape times dtype", body: shortBin, headers: map[string]string{"Inference-Header-Content-Length": shortH}, want: 400},
		{name: "header length past the end", body: pastEnd, headers: map[string]string{"Inference-Header-Content-Length": "100000"}, want: 400},
		{name: "header length not a number", body: pastEnd, headers: map[string]string{"Inference-Header-Content-Length": "ten"}, want: 400},
		{name: "binary_data_size without the header", body: pastEnd, want: 400},
		{name: "truncated BYTES element", path: "/v2/models/strings/infer", body: truncBytes, headers: map[string]string{"Inference-Header-Content-Length": truncH}, want: 400},
		{name: "too many inputs (limits.max_inputs)", body: fiveInputs, want: 400},
		{name: "rank over limits.max_rank", body: mlpBody("[1,1,1,1,4]", "[1,2,3,4]"), want: 400},
		{name: "elements over limits.max_elements", body: mlpBody("[50000,4]", "[1]"), want: 400},
		{name: "BYTES element over limits.max_string_bytes", path: "/v2/models/strings/infer", body: longBin, headers: map[string]string{"Inference-Header-Content-Length": longH}, want: 400},
		{name: "nesting over limits.max_json_depth", body: mlpBody("[1,4]", deep), want: 400},
		{name: "body over server.max_request_bytes", body: big, want: 413},
		{name: "headers over server.max_header_bytes", body: mlpBody("[1,4]", "[1,2,3,4]"), headers: map[string]string{"X-Padding": strings.Repeat("p", 9000)}, want: 431},
		{name: "GET on infer", method: "GET", want: 405},
		{name: "unknown model", path: "/v2/models/nope/infer", body: mlpBody("[1,4]", "[1,2,3,4]"), want: 404},
		{name: "unknown version", path: "/v2/models/mlp/versions/9/infer", body: mlpBody("[1,4]", "[1,2,3,4]"), want: 404},
		{name: "no token", body: mlpBody("[1,4]", "[1,2,3,4]"), headers: map[string]string{"Authorization": ""}, want: 401},
		{name: "wrong token", body: mlpBody("[1,4]", "[1,2,3,4]"), headers: map[string]string{"Authorization": "Bearer not-the-token-0123456789"}, want: 401},
		{name: "infer token on an admin endpoint", path: "/v2/repository/models/mlp/unload", headers: map[string]string{"Authorization": "Bearer " + inferToken}, want: 403},
	}
}

func TestBadInputMatrix(t *testing.T) {
	_, client, url := secureDaemon(t)
	good := func() {
		t.Helper()
		x := []float32{0.5, -1, 2, 0.25}
		req, _ := http.NewRequest("POST", url+"/v2/models/mlp/infer", strings.NewReader(mlpBody("[1,4]", "[0.5,-1,2,0.25]")))
		req.Header.Set("Authorization", "Bearer "+inferToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("the daemon stopped serving: %v", err)
		}
		defer resp.Body.Close()
		var out struct {
			Outputs []struct{ Data []float64 } `json:"outputs"`
		}
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil || len(out.Outputs) != 1 {
			t.Fatalf("a valid request after bad input: status %d", resp.StatusCode)
		}
		want := testmodels.MLPForward(x)
		for i, w := range want {
			if math.Abs(out.Outputs[0].Data[i]-float64(w)) > 1e-5 {
				t.Fatalf("output %d = %v, want %v", i, out.Outputs[0].Data[i], w)
			}
		}
	}
	good()
	cases := badCases()
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, path := c.method, c.path
			if method == "" {
				method = "POST"
			}
			if path == "" {
				path = "/v2/models/mlp/infer"
			}
			req, _ := http.NewRequest(method, url+path, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+adminToken)
			for k, v := range c.headers {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, c.want, body)
			}
			var e struct {
				Error *string `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || *e.Error == "" {
				t.Fatalf("body %q is not a KServe error", body)
			}
			t.Logf("%d %s", resp.StatusCode, *e.Error)
			good()
		})
	}

	// The limits are counted.
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`inferd_http_limit_rejections_total{limit="max_inputs"} 1`,
		`inferd_http_limit_rejections_total{limit="max_rank"} 1`,
		`inferd_http_limit_rejections_total{limit="max_elements"} 1`,
		`inferd_http_limit_rejections_total{limit="max_string_bytes"} 1`,
		`inferd_http_limit_rejections_total{limit="max_depth"} 1`,
		`inferd_http_limit_rejections_total{limit="max_request_bytes"} 1`,
		`inferd_http_limit_rejections_total{limit="max_header_bytes"} 1`,
		`inferd_http_auth_denied_total{reason="missing"} 1`,
		`inferd_http_auth_denied_total{reason="invalid"} 1`,
		`inferd_http_auth_denied_total{reason="scope"} 1`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestSlowBodyGets408 sends headers and half a body, then nothing: the daemon answers 408
// once server.read_timeout passes, and keeps serving.
func TestSlowBodyGets408(t *testing.T) {
	_, client, url := secureDaemon(t)
	host := strings.TrimPrefix(url, "https://")
	conn, err := tls.Dial("tcp", host, client.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := mlpBody("[1,4]", "[1,2,3,4]")
	fmt.Fprintf(conn, "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		host, inferToken, len(body), body[:len(body)/2])
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	reply, _ := io.ReadAll(conn)
	if !bytes.HasPrefix(reply, []byte("HTTP/1.1 408")) || !bytes.Contains(reply, []byte(`"error"`)) {
		t.Fatalf("reply %q, want a 408 with a KServe error", reply)
	}
}
