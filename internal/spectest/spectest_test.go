package spectest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestValidateSchemas(t *testing.T) {
	tests := []struct {
		schema  string
		valid   []string
		invalid []string
	}{
		{
			schema: "inference_response",
			valid: []string{
				`{"model_name":"m","model_version":"1","id":"a","parameters":{"k":1},"outputs":[` +
					`{"name":"y","datatype":"FP32","shape":[2,2],"data":[1,2.5,-3,4e-3]},` +
					`{"name":"s","datatype":"BYTES","shape":[],"data":["x"]},` +
					`{"name":"n","datatype":"INT32","shape":[2,1],"data":[[1],[2]]}]}`,
				`{"model_name":"m","outputs":[]}`,
			},
			invalid: []string{
				`{"model_version":"1","outputs":[]}`, // model_name missing
				`{"model_name":"m"}`,                 // outputs missing
				`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","data":[1]}]}`, // shape missing
				`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1.5],"data":[1]}]}`,
				`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":1}]}`,
				`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[null]}]}`,
				`{"model_name":"m","id":7,"outputs":[]}`,
				`{"model_name":"m","outputs":[],"parameters":[]}`,
				`{"model_name":"m","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[NaN]}]}`, // not JSON
			},
		},
		{
			schema:  "inference_error_response",
			valid:   []string{`{"error":"bad input"}`, `{}`},
			invalid: []string{`{"error":42}`, `[]`, `"error"`},
		},
		{
			schema: "metadata_server_response",
			valid:  []string{`{"name":"inferd","version":"0.1","extensions":["binary_tensor_data"]}`},
			invalid: []string{
				`{"name":"inferd","version":"0.1"}`,
				`{"name":"inferd","version":"0.1","extensions":null}`,
				`{"name":"inferd","version":1,"extensions":[]}`,
			},
		},
		{
			schema: "metadata_model_response",
			valid: []string{
				`{"name":"m","versions":["1"],"platform":"onnxruntime_onnx",` +
					`"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}],"outputs":[{"name":"y","datatype":"FP32","shape":[]}]}`,
				`{"name":"m","platform":"onnxruntime_onnx"}`,
			},
			invalid: []string{
				`{"name":"m"}`,
				`{"name":"m","platform":"p","inputs":[{"name":"x","datatype":"FP32"}]}`,
				`{"name":"m","platform":"p","inputs":null}`,
				`{"name":"m","platform":"p","versions":[1]}`,
			},
		},
		{
			schema:  "metadata_model_error_response",
			valid:   []string{`{"error":"unknown model"}`},
			invalid: []string{`{"message":"unknown model"}`},
		},
		{
			schema: "inference_request",
			valid: []string{
				`{"id":"42","inputs":[{"name":"x","shape":[2],"datatype":"UINT32","data":[1,2]}],"outputs":[{"name":"y"}]}`,
			},
			invalid: []string{
				`{"id":"42"}`,
				`{"inputs":[{"name":"x","shape":[2],"datatype":"UINT32"}]}`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			for _, body := range tt.valid {
				if err := validate(tt.schema, []byte(body)); err != nil {
					t.Errorf("valid body rejected: %v\n%s", err, body)
				}
			}
			for _, body := range tt.invalid {
				err := validate(tt.schema, []byte(body))
				if err == nil {
					t.Errorf("invalid body accepted: %s", body)
					continue
				}
				t.Logf("%s: %v", body, err)
			}
		})
	}
}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errors, fatals []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
}

func TestValidateReports(t *testing.T) {
	var r recorder
	Validate(&r, "inference_error_response", []byte(`{"error":"x"}`))
	if len(r.errors)+len(r.fatals) != 0 {
		t.Errorf("valid body: failures %v %v", r.errors, r.fatals)
	}

	r = recorder{}
	Validate(&r, "metadata_server_response", []byte(`{"name":"inferd"}`))
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "metadata_server_response") ||
		!strings.Contains(r.errors[0], "version") || !strings.Contains(r.errors[0], `{"name":"inferd"}`) {
		t.Errorf("invalid body: got errors %q, want one naming the schema, the problem and the body", r.errors)
	}

	r = recorder{}
	Validate(&r, "no_such_schema", []byte(`{}`))
	if len(r.fatals) != 1 || !strings.Contains(r.fatals[0], `no schema "no_such_schema"`) ||
		!strings.Contains(r.fatals[0], "inference_response") {
		t.Errorf("unknown schema: got fatals %q, want one listing the schemas", r.fatals)
	}
}

func TestValidateConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"model_name":"m","outputs":[{"name":"y%d","datatype":"INT64","shape":[1],"data":[%d]}]}`, i, i)
			if err := validate("inference_response", []byte(body)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
