// Package archtest enforces the package map of DESIGN.md: dependencies point down the list,
// and each cgo binding is imported by exactly one package.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/inferd/inferd/internal/testutil"
)

const module = "github.com/inferd/inferd"

// allowed lists, for each package of ours, the packages of ours its non-test files may import.
// A package missing from this table fails the test, so a new package needs a decision here.
var allowed = map[string][]string{
	"tensor":                          {},
	"config":                          {"internal/tomlx"},
	"engine":                          {"tensor"},
	"engine/ort":                      {"engine", "tensor"},
	"engine/worker":                   {"engine", "placement", "tensor"},
	"engine/enginetest":               {"engine", "tensor"},
	"kserve":                          {"tensor"},
	"kserve/kservehttp":               {"kserve"},
	"models":                          {"engine", "internal/tomlx", "placement", "scheduler", "tensor", "tuning"},
	"scheduler":                       {"engine", "tensor"},
	"tuning":                          {"engine", "tensor"},
	"dispatch":                        {"models", "scheduler", "tensor"},
	"api":                             {"dispatch", "engine", "kserve", "kserve/kservehttp", "models", "scheduler", "tensor", "tracing", "tracing/span"},
	"kserve/kservepb":                 {},
	"kserve/kservegrpc":               {"kserve", "kserve/kservepb", "tensor"},
	"grpcapi":                         {"auth", "dispatch", "kserve", "kserve/kservegrpc", "kserve/kservepb", "models", "scheduler", "tensor", "tracing", "tracing/span"},
	"daemon":                          {"api", "auth", "cluster", "cluster/admin", "cluster/deploy", "cluster/policy", "cluster/rollout", "cluster/route", "config", "dashboard", "engine", "events", "gpu", "grpcapi", "hostinfo", "kserve", "kserve/kservehttp", "metrics", "models", "scheduler", "status", "tensor", "tlsconf", "tracing", "tuning", "watch", "window"},
	"metrics":                         {},
	"cmd/inferd":                      {"api", "cluster/admin", "cluster/deploy", "cluster/rollout", "config", "daemon", "engine", "engine/ort", "engine/worker", "events", "gpu", "hostinfo", "internal/buildinfo", "internal/mlpmodel", "logging", "perf", "status", "tensor"},
	"perf":                            {"engine", "kserve", "kserve/kservegrpc", "kserve/kservepb", "tensor"},
	"internal/buildinfo":              {},
	"internal/onnxgen":                {},
	"internal/mlpmodel":               {"internal/onnxgen"},
	"internal/testmodels":             {"internal/mlpmodel", "internal/onnxgen", "tensor"},
	"internal/testmodels/cmd/gendemo": {"internal/testmodels"},
	"internal/spectest":               {},
	"internal/daemontest":             {"internal/testutil"},
	"internal/archtest":               {},
	"internal/testutil":               {},
	"internal/tomlx":                  {},
	"watch":                           {},
	"e2e":                             {},
	"e2e/systemd":                     {},
	"logging":                         {},
	"bench/cmd/bench":                 {"internal/testmodels", "perf", "tensor"},
	"bench/cmd/floor":                 {},
	"bench/cmd/tracebench":            {"internal/testmodels", "perf"},
	"cluster":                         {},
	"auth":                            {"kserve"},
	"tlsconf":                         {},
	"cluster/route":                   {"cluster", "kserve/kservehttp", "tracing/span"},
	"tracing":                         {"cluster/route", "scheduler", "tracing/span"},
	"tracing/span":                    {},
	"cluster/rollout":                 {"cluster", "internal/tomlx"},
	"cluster/policy":                  {"cluster", "cluster/rollout", "cluster/route", "internal/tomlx"},
	"cluster/admin":                   {"cluster", "cluster/rollout", "cluster/route", "kserve"},
	"cluster/deploy":                  {"cluster", "kserve"},
	"gpu":                             {},
	"hostinfo":                        {},
	"placement":                       {},
	"e2e/gpu":                         {},
	"events":                          {},
	"window":                          {"scheduler"},
	"status":                          {"events", "kserve", "kserve/kservehttp", "window"},
	"dashboard":                       {"kserve/kservehttp"},
}

// exclusive names third-party modules that only one package may import.
var exclusive = map[string]string{
	"github.com/yalue/onnxruntime_go": "engine/ort",
	"github.com/NVIDIA/go-nvml":       "gpu",
}

func TestImports(t *testing.T) {
	root := testutil.ModuleRoot(t)
	fset := token.NewFileSet()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "build" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		seen[pkg] = true
		mine, ok := allowed[pkg]
		if !ok {
			t.Errorf("package %s is not in archtest's table: decide what it may import", pkg)
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if ours, ok := strings.CutPrefix(p, module+"/"); ok {
				if !slices.Contains(mine, ours) {
					t.Errorf("%s imports %s, which the package map does not allow", rel+"/"+filepath.Base(path), ours)
				}
			}
			for mod, owner := range exclusive {
				if (p == mod || strings.HasPrefix(p, mod+"/")) && pkg != owner {
					t.Errorf("%s imports %s; only %s may", rel+"/"+filepath.Base(path), p, owner)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"engine/ort", "api", "daemon", "models", "scheduler", "config"} {
		if !seen[must] {
			t.Errorf("package %s not found: is the walk broken?", must)
		}
	}
}
