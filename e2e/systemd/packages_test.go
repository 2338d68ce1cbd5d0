//go:build e2e_systemd

package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestLintian: no errors on the .deb (errors that cannot be fixed are overridden in the
// package, with the reason); the warnings that remain are logged and documented in
// docs/packaging.md.
func TestLintian(t *testing.T) {
	requireRoot(t, "lintian")
	deb := input(t, "INFERD_DEB")
	out, err := exec.Command("lintian", "--fail-on", "error", deb).CombinedOutput()
	t.Logf("lintian --fail-on error:\n%s", out)
	if err != nil {
		t.Errorf("lintian reports errors: %v", err)
	}
	// (--show-overrides makes lintian count the overridden errors in its exit status, so the
	// overrides are listed by a second run.)
	overridden, _ := exec.Command("lintian", "--show-overrides", "--no-tag-display-limit", deb).CombinedOutput()
	for _, l := range strings.Split(string(overridden), "\n") {
		if strings.HasPrefix(l, "O: ") {
			t.Logf("overridden (see the reason in the package's lintian overrides): %s", l)
		}
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian error: %s", l)
		}
	}
}

// TestRPM checks the .rpm's metadata and scripts, then installs its payload into a scratch
// Debian root with rpm --root (its scripts run there, chrooted: user, directories, enabled
// unit) and erases it again (state stays: RPM has no purge).
func TestRPM(t *testing.T) {
	requireRoot(t, "rpm", "tar", "sh")
	pkg := input(t, "INFERD_RPM")

	configs := query(t, "-qp", "--configfiles", pkg)
	if want := []string{"/etc/inferd/inferd.toml", "/etc/sysconfig/inferd"}; !slices.Equal(configs, want) {
		t.Errorf("config files %q, want %q", configs, want)
	}
	requires := query(t, "-qp", "--requires", pkg)
	for _, want := range []string{"libc.so.6(GLIBC_2.34)(64bit)", "libstdc++.so.6(GLIBCXX_3.4.22)(64bit)"} {
		if !slices.Contains(requires, want) {
			t.Errorf("requires %q: no %s", requires, want)
		}
	}
	files := query(t, "-qpl", pkg)
	for _, want := range []string{"/usr/bin/inferd", "/usr/lib/inferd/libonnxruntime.so.1", "/usr/lib/systemd/system/inferd.service",
		"/usr/lib/systemd/system/inferd.socket", "/usr/lib/sysusers.d/inferd.conf", "/usr/lib/tmpfiles.d/inferd.conf",
		"/var/lib/inferd/models", "/usr/share/doc/inferd/licenses/onnxruntime/LICENSE"} {
		if !slices.Contains(files, want) {
			t.Errorf("the rpm has no %s", want)
		}
	}
	if slices.Contains(files, "/etc/default/inferd") {
		t.Error("the rpm carries the Debian environment file")
	}

	// Every scriptlet parses as POSIX sh.
	scripts, err := exec.Command("rpm", "-qp", "--scripts", pkg).Output()
	if err != nil {
		t.Fatal(err)
	}
	parts := regexp.MustCompile(`(?m)^(\w+) scriptlet \(using /bin/sh\):\n`).Split(string(scripts), -1)
	if len(parts) != 5 {
		t.Errorf("%d scriptlets, want 4:\n%s", len(parts)-1, scripts)
	}
	for _, body := range parts[1:] {
		cmd := exec.Command("sh", "-n")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("scriptlet does not parse: %v\n%s\n%s", err, out, body)
		}
	}

	root := extractRootfs(t)
	rpm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("rpm", append([]string{"--root", root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("rpm %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	rpm("--initdb")
	t.Logf("rpm -i --root: %s", rpm("-i", "--nodeps", pkg))
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }
	for _, p := range []string{"usr/bin/inferd", "etc/sysconfig/inferd", "etc/inferd/inferd.toml",
		"etc/systemd/system/multi-user.target.wants/inferd.service"} {
		if !exists(p) {
			t.Errorf("after rpm -i: no /%s", p)
		}
	}
	if exists("etc/default/inferd") {
		t.Error("after rpm -i: /etc/default/inferd")
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !regexp.MustCompile(`(?m)^inferd:x:\d+:\d+:`).Match(passwd) {
		t.Errorf("after rpm -i: no inferd user in /etc/passwd")
	}
	owner, _ := exec.Command("chroot", root, "stat", "-c", "%U %a", "/var/lib/inferd/models").CombinedOutput()
	if got := strings.TrimSpace(string(owner)); got != "inferd 750" {
		t.Errorf("/var/lib/inferd/models: %s, want inferd 750", got)
	}

	// An operator's model, then erase: the package's files and the enabled unit go, the model
	// stays (only a Debian purge removes state).
	model := filepath.Join(root, "var/lib/inferd/models/mlp/1/model.onnx")
	if err := os.MkdirAll(filepath.Dir(model), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(model, []byte("model"), 0o644); err != nil {
		t.Fatal(err)
	}
	rpm("-e", "inferd")
	if exists("usr/bin/inferd") || exists("etc/systemd/system/multi-user.target.wants/inferd.service") {
		t.Error("rpm -e left the binary or the enabled unit")
	}
	if !exists("var/lib/inferd/models/mlp/1/model.onnx") {
		t.Error("rpm -e removed the operator's models")
	}
}

func query(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("rpm", args...).Output()
	if err != nil {
		t.Fatalf("rpm %q: %v", args, err)
	}
	return strings.Fields(string(out))
}
