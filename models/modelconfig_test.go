package models

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/tensor"
)

func TestVersionPolicySelect(t *testing.T) {
	onDisk := []int64{1, 2, 5, 9}
	cases := []struct {
		name   string
		policy VersionPolicy
		want   []int64
	}{
		{"default newest", VersionPolicy{}, []int64{9}},
		{"latest 1", VersionPolicy{Latest: 1}, []int64{9}},
		{"latest 2", VersionPolicy{Latest: 2}, []int64{5, 9}},
		{"latest more than exist", VersionPolicy{Latest: 10}, onDisk},
		{"all", VersionPolicy{All: true}, onDisk},
		{"specific", VersionPolicy{Specific: []int64{2, 9, 7}}, []int64{2, 9}},
		{"specific none on disk", VersionPolicy{Specific: []int64{3}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.policy.selectVersions(onDisk); !slices.Equal(got, c.want) {
				t.Errorf("selectVersions = %v, want %v", got, c.want)
			}
		})
	}
}

func TestReadConfig(t *testing.T) {
	defaults := Defaults{Instances: 2, MaxBatchSize: 0}
	cases := []struct {
		name    string
		content string // "" = no model.toml
		want    Config
		errs    []string // substrings of the error; nil = no error
	}{
		{name: "no file", want: Config{Instance: InstanceConfig{Count: 2, Device: "cpu"}, VersionPolicy: VersionPolicy{Latest: 1}}},
		{
			name:    "full",
			content: "max_batch_size = 8\n[instance]\ncount = 3\ndevice = \"auto\"\nintra_op_threads = 2\n[version_policy]\nspecific = [1, 3]\n[[inputs]]\nname = \"x\"\nshape = [-1, 4]\n",
			want: Config{MaxBatchSize: 8, Instance: InstanceConfig{Count: 3, Device: "auto", IntraOpThreads: 2},
				VersionPolicy: VersionPolicy{Specific: []int64{1, 3}}, Inputs: []TensorOverride{{Name: "x", Shape: []int64{-1, 4}}}},
		},
		{name: "unknown keys with lines", content: "max_batch_size = 8\nmax_batch = 3\n[instance]\ncuont = 1\n", errs: []string{"model.toml:2: unknown key \"max_batch\"", "model.toml:4: unknown key \"instance.cuont\""}},
		{name: "wrong type", content: "max_batch_size = \"big\"\n", errs: []string{"model.toml:1:"}},
		{name: "negative batch", content: "max_batch_size = -1\n", errs: []string{"max_batch_size -1"}},
		{name: "bad device", content: "[instance]\ndevice = \"tpu\"\n", errs: []string{"instance.device \"tpu\""}},
		{
			name:    "gpu settings",
			content: "[instance]\ndevice = \"gpu\"\ngpus = [1, 3]\ncpu_fallback = true\nspread = true\ngpu_memory_bytes = 1073741824\n",
			want: Config{Instance: InstanceConfig{Count: 2, Device: "gpu", GPUs: []int{1, 3}, CPUFallback: true, Spread: true, GPUMemoryBytes: 1 << 30},
				VersionPolicy: VersionPolicy{Latest: 1}},
		},
		{name: "cpu_fallback is harmless on cpu", content: "[instance]\ncpu_fallback = true\n",
			want: Config{Instance: InstanceConfig{Count: 2, Device: "cpu", CPUFallback: true}, VersionPolicy: VersionPolicy{Latest: 1}}},
		{name: "gpu settings with device cpu", content: "[instance]\ngpus = [0]\nspread = true\n",
			errs: []string{`instance.gpus, instance.spread set, but instance.device is "cpu"`}},
		{name: "bad gpu list", content: "[instance]\ndevice = \"auto\"\ngpus = [-1, 2, 2]\ngpu_memory_bytes = -5\n",
			errs: []string{"instance.gpus: -1 is not a GPU index", "GPU 2 listed twice", "gpu_memory_bytes -5"}},
		{name: "two policies", content: "[version_policy]\nlatest = 2\nall = true\n", errs: []string{"only one of"}},
		{name: "bad tuning", content: "[tuning]\nweight = -2.0\nscale_down_after = \"-1s\"\n", errs: []string{"scale_down_after and weight must not be negative"}},
		{name: "tuning", content: "[tuning]\nweight = 3.0\nscale_down_after = \"0s\"\n",
			want: Config{Instance: InstanceConfig{Count: 2, Device: "cpu"}, VersionPolicy: VersionPolicy{Latest: 1}}},
		{name: "bad override dim", content: "[[inputs]]\nname = \"x\"\nshape = [0]\n", errs: []string{"dimension 0 must be positive"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.content != "" {
				if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(c.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readConfig(dir, defaults)
			if c.errs != nil {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("err = %v, want ErrConfig", err)
				}
				for _, s := range c.errs {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.MaxBatchSize != c.want.MaxBatchSize || !reflect.DeepEqual(got.Instance, c.want.Instance) ||
				got.VersionPolicy.Latest != c.want.VersionPolicy.Latest || got.VersionPolicy.All != c.want.VersionPolicy.All ||
				!slices.Equal(got.VersionPolicy.Specific, c.want.VersionPolicy.Specific) || len(got.Inputs) != len(c.want.Inputs) {
				t.Errorf("config = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestEffectiveInputs(t *testing.T) {
	model := []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3, -1}}}
	cases := []struct {
		name      string
		overrides []TensorOverride
		want      []int64
		err       string
	}{
		{"none", nil, []int64{-1, 3, -1}, ""},
		{"fix a variable dim", []TensorOverride{{Name: "x", Shape: []int64{-1, 3, 224}}}, []int64{-1, 3, 224}, ""},
		{"contradicts a fixed dim", []TensorOverride{{Name: "x", Shape: []int64{-1, 4, 224}}}, nil, "dimension 1 is 3"},
		{"wrong rank", []TensorOverride{{Name: "x", Shape: []int64{-1, 3}}}, nil, "rank 2"},
		{"unknown input", []TensorOverride{{Name: "y", Shape: []int64{1}}}, nil, "no such input"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Config{Inputs: c.overrides}.effectiveInputs(model)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got[0].Shape, c.want) {
				t.Fatalf("shape = %v (%v), want %v", got, err, c.want)
			}
			if model[0].Shape[2] != -1 {
				t.Fatal("effectiveInputs changed the model's own signature")
			}
		})
	}
}

// TestSchedulerPolicyMaxRunTime: a run's bound is the model's [limits] max_run_time, else the
// daemon's [engine] default, else none.
func TestSchedulerPolicyMaxRunTime(t *testing.T) {
	cases := []struct {
		name     string
		content  string
		defaults Defaults
		want     time.Duration
	}{
		{"none", "", Defaults{Instances: 1}, 0},
		{"engine default", "", Defaults{Instances: 1, MaxRunTime: 3 * time.Second}, 3 * time.Second},
		{"model limit", "[limits]\nmax_run_time = \"250ms\"\n", Defaults{Instances: 1, MaxRunTime: 3 * time.Second}, 250 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.content != "" {
				if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(c.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, err := readConfig(dir, c.defaults)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.schedulerPolicy().MaxRunTime; got != c.want {
				t.Errorf("MaxRunTime = %s, want %s", got, c.want)
			}
		})
	}
}

// [tuning] weight and scale_down_after reach the scheduler's policy ("0s" keeps the count).
func TestTuningKeysReachThePolicy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte("[tuning]\nweight = 3.0\nscale_down_after = \"0s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := readConfig(dir, Defaults{Instances: 1})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.schedulerPolicy(); p.Weight != 3 {
		t.Errorf("policy weight %v, want 3", p.Weight)
	}
	if d := c.Tuning.scaleDownAfter(); d != 0 {
		t.Errorf("scale_down_after %s, want 0 (kept count)", d)
	}
	if d := (TuningConfig{}).scaleDownAfter(); d != DefaultScaleDownAfter {
		t.Errorf("unset scale_down_after %s, want %s", d, DefaultScaleDownAfter)
	}
}
