package kservepb_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/inferd/inferd/internal/testutil"
)

// protocLine is the generated files' note of the protoc version, which may differ between
// machines without changing the code.
var protocLine = regexp.MustCompile(`(?m)^//\s+protoc\s+v.*$`)

// TestGeneratedCodeIsCurrent regenerates the Go code from inference.proto (scripts/genproto.sh,
// as make proto does) and fails when it differs from the committed files. It skips without
// protoc unless INFERD_REQUIRE_PROTOC is set (CI installs protoc and sets it).
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("INFERD_REQUIRE_PROTOC") != "" {
			t.Fatal("protoc not found (apt-get install protobuf-compiler)")
		}
		t.Skip("protoc not found: install protobuf-compiler to check the generated code")
	}
	root := testutil.ModuleRoot(t)
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "scripts", "genproto.sh"), out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("genproto.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"inference.pb.go", "inference_grpc.pb.go"} {
		fresh, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(filepath.Join(root, "kserve", "kservepb", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(protocLine.ReplaceAll(fresh, nil), protocLine.ReplaceAll(committed, nil)) {
			t.Errorf("kserve/kservepb/%s is not what inference.proto generates: run make proto and commit the result", name)
		}
	}
}
