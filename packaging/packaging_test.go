// Package packaging holds no Go code: its tests check the files the OS packages are built
// from (nfpm.yaml at the repository root): the generated /etc/inferd/inferd.toml, the
// maintainer scripts under both formats' arguments, and the unit's sandbox. The packages
// themselves are proven in a booted systemd by e2e/systemd (make e2e-systemd).
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/inferd/inferd/config"
)

// generatedConfig runs genconfig.sh on the reference configuration.
func generatedConfig(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("sh", "genconfig.sh", "../configs/inferd.toml").Output()
	if err != nil {
		t.Fatalf("genconfig.sh: %v", err)
	}
	return string(out)
}

var keyLine = regexp.MustCompile(`^(#?)([A-Za-z0-9_]+)\s*=`)

// The packaged configuration lists every key of the reference, commented out, and its values
// are the defaults: uncommenting every line changes nothing. The keys it sets are grpc.listen,
// so that the package serves gRPC next to HTTP, and server.state_dir, so that calibration
// profiles survive a restart.
func TestPackagedConfigIsCommentedDefaults(t *testing.T) {
	gen := generatedConfig(t)
	ref, err := os.ReadFile("../configs/inferd.toml")
	if err != nil {
		t.Fatal(err)
	}
	keys := func(s string, commented bool) []string {
		var out []string
		section := ""
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "[") {
				section = l
			}
			if m := keyLine.FindStringSubmatch(l); m != nil && (m[1] == "#") == commented {
				out = append(out, section+m[2])
			}
		}
		return out
	}
	set := []string{"[server]state_dir", "[grpc]listen"}
	if live := keys(gen, false); !slices.Equal(live, set) {
		t.Errorf("keys set in the packaged configuration: %v; want only %v", live, set)
	}
	if want, got := slices.DeleteFunc(keys(string(ref), false), func(k string) bool { return slices.Contains(set, k) }), keys(gen, true); !slices.Equal(want, got) {
		t.Errorf("packaged keys %v\nreference keys %v", got, want)
	}
	if !strings.Contains(gen, "\n#repository = \"/var/lib/inferd/models\"\n") {
		t.Error("the packaged configuration must show the package's model repository")
	}
	if strings.Contains(gen, "configs/models") || strings.Contains(gen, "make run") {
		t.Error("the packaged configuration mentions the source tree")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "inferd.toml")
	if err := os.WriteFile(path, []byte(gen), 0o644); err != nil {
		t.Fatal(err)
	}
	asIs, err := config.Load(path, nil)
	if err != nil {
		t.Fatalf("the packaged configuration does not load: %v", err)
	}
	uncommented := regexp.MustCompile(`(?m)^#([A-Za-z0-9_]+\s*=)`).ReplaceAllString(gen, "$1")
	if err := os.WriteFile(path, []byte(uncommented), 0o644); err != nil {
		t.Fatal(err)
	}
	explicit, err := config.Load(path, nil)
	if err != nil {
		t.Fatalf("the packaged configuration, every key uncommented, does not load: %v", err)
	}
	def := config.Default()
	def.GRPC.Listen = "127.0.0.1:8001"
	def.Server.StateDir = "/var/lib/inferd/state"
	if !reflect.DeepEqual(*asIs, def) || !reflect.DeepEqual(*explicit, def) {
		t.Errorf("commented values are not the defaults:\n as is       %+v\n uncommented %+v\n defaults    %+v", *asIs, *explicit, def)
	}
}

// scriptEnv is a fake system for the maintainer scripts: a root directory (DPKG_ROOT, as dpkg
// --root sets it) and a PATH of stubs that record their arguments, next to the few real tools
// the scripts use.
type scriptEnv struct {
	root, bin, log string
}

func newScriptEnv(t *testing.T, stubs ...string) *scriptEnv {
	t.Helper()
	dir := t.TempDir()
	e := &scriptEnv{root: filepath.Join(dir, "root"), bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "calls")}
	for _, d := range []string{e.bin, filepath.Join(e.root, "etc"), filepath.Join(e.root, "var/lib/inferd/models"), filepath.Join(e.root, "var/cache/inferd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tool := range []string{"sh", "grep", "rm", "rmdir", "cat", "install"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s not found", tool)
		}
		if err := os.Symlink(p, filepath.Join(e.bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	// A stub logs "name args..." and, for systemd-sysusers reading "-", what it read; it exits
	// with the status after "=" in its name ("useradd=9"), or 0.
	for _, s := range stubs {
		s, status, _ := strings.Cut(s, "=")
		script := "#!/bin/sh\necho \"" + s + " $*\" >>'" + e.log + "'\n"
		if s == "systemd-sysusers" {
			script += "for a; do [ \"$a\" = - ] && sed 's/^/  stdin: /' >>'" + e.log + "'; done\n"
		}
		if status != "" {
			script += "exit " + status + "\n"
		}
		if err := os.WriteFile(filepath.Join(e.bin, s), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := exec.LookPath("sed"); err == nil {
		_ = os.Symlink(p, filepath.Join(e.bin, "sed"))
	}
	return e
}

// run runs a maintainer script with args and returns the stubs' calls, one per line.
func (e *scriptEnv) run(t *testing.T, script string, args ...string) []string {
	t.Helper()
	_ = os.Remove(e.log)
	cmd := exec.Command(filepath.Join(e.bin, "sh"), append([]string{"-e", filepath.Join("scripts", script)}, args...)...)
	cmd.Env = []string{"PATH=" + e.bin, "DPKG_ROOT=" + e.root}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", script, args, err, out)
	}
	b, err := os.ReadFile(e.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

func TestMaintainerScripts(t *testing.T) {
	sysusers, err := os.ReadFile("sysusers.d/inferd.conf")
	if err != nil {
		t.Fatal(err)
	}
	var userLine string
	for _, l := range strings.Split(string(sysusers), "\n") {
		if strings.HasPrefix(l, "u ") {
			userLine = l
		}
	}
	all := []string{"systemctl", "systemd-sysusers", "systemd-tmpfiles", "useradd", "getent"}
	root := "ROOT" // replaced by the scriptEnv's root below
	tests := []struct {
		name   string
		stubs  []string
		script string
		args   []string
		want   []string
	}{
		{"deb preinst install", all, "preinstall.sh", []string{"install"}, []string{
			"systemd-sysusers --root=ROOT --replace=/usr/lib/sysusers.d/inferd.conf -", "  stdin: " + userLine}},
		{"rpm pre install", all, "preinstall.sh", []string{"1"}, []string{
			"systemd-sysusers --root=ROOT --replace=/usr/lib/sysusers.d/inferd.conf -", "  stdin: " + userLine}},
		{"preinst without systemd", []string{"useradd"}, "preinstall.sh", []string{"install"}, []string{
			"useradd --root ROOT --system --user-group --no-create-home --home-dir /var/lib/inferd --shell /sbin/nologin --comment inferd ONNX inference daemon inferd"}},
		{"deb postinst configure (install)", all, "postinstall.sh", []string{"configure", ""}, []string{
			"systemd-tmpfiles --root=ROOT --create /usr/lib/tmpfiles.d/inferd.conf",
			"systemctl --root=ROOT enable inferd.service"}},
		{"deb postinst configure (upgrade)", all, "postinstall.sh", []string{"configure", "0.0.0+git1.gabcdef0-1"}, []string{
			"systemd-tmpfiles --root=ROOT --create /usr/lib/tmpfiles.d/inferd.conf"}},
		{"deb postinst abort-upgrade", all, "postinstall.sh", []string{"abort-upgrade", "1"}, nil},
		{"rpm post install", all, "postinstall.sh", []string{"1"}, []string{
			"systemd-tmpfiles --root=ROOT --create /usr/lib/tmpfiles.d/inferd.conf",
			"systemctl --root=ROOT enable inferd.service"}},
		{"rpm post upgrade", all, "postinstall.sh", []string{"2"}, []string{
			"systemd-tmpfiles --root=ROOT --create /usr/lib/tmpfiles.d/inferd.conf"}},
		{"deb prerm remove", all, "preremove.sh", []string{"remove"}, []string{
			"systemctl --root=ROOT disable inferd.service inferd.socket"}},
		{"deb prerm upgrade", all, "preremove.sh", []string{"upgrade", "2"}, nil},
		{"rpm preun erase", all, "preremove.sh", []string{"0"}, []string{
			"systemctl --root=ROOT disable inferd.service inferd.socket"}},
		{"rpm preun upgrade", all, "preremove.sh", []string{"1"}, nil},
		{"deb postrm remove", all, "postremove.sh", []string{"remove"}, nil},
		{"deb postrm purge", all, "postremove.sh", []string{"purge"}, nil},
		{"rpm postun erase", all, "postremove.sh", []string{"0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newScriptEnv(t, tt.stubs...)
			got := e.run(t, tt.script, tt.args...)
			var want []string
			for _, w := range tt.want {
				want = append(want, strings.ReplaceAll(w, root, e.root))
			}
			if !slices.Equal(got, want) {
				t.Errorf("calls\n got %q\nwant %q", got, want)
			}
			_, errState := os.Stat(filepath.Join(e.root, "var/lib/inferd/models"))
			purged := tt.name == "deb postrm purge"
			if purged != os.IsNotExist(errState) {
				t.Errorf("state under /var/lib/inferd after %s: %v (only purge removes it)", tt.name, errState)
			}
		})
	}
}

// Without systemd-sysusers, a user that exists already (useradd's status 9) is fine, and any
// other useradd failure fails the installation.
func TestPreinstallUseradd(t *testing.T) {
	e := newScriptEnv(t, "useradd=9")
	if got := e.run(t, "preinstall.sh", "upgrade", "1"); len(got) != 1 || !strings.HasPrefix(got[0], "useradd ") {
		t.Errorf("calls: %q", got)
	}
	e = newScriptEnv(t, "useradd=1")
	cmd := exec.Command(filepath.Join(e.bin, "sh"), "-e", "scripts/preinstall.sh", "install")
	cmd.Env = []string{"PATH=" + e.bin, "DPKG_ROOT=" + e.root}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("preinstall succeeded although useradd failed:\n%s", out)
	}
}

// The unit's sandbox scores at most 2.5 ("OK") in systemd's own assessment.
func TestUnitExposure(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", "systemd/inferd.service").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Overall exposure level") {
		if strings.Contains(string(out), "offline") {
			t.Skipf("systemd-analyze too old for --offline: %s", out)
		}
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for inferd.service: ([0-9.]+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if exposure, err := strconv.ParseFloat(m[1], 64); err != nil || exposure > 2.5 {
		t.Errorf("exposure %s, want at most 2.5:\n%s", m[1], out)
	}
	t.Logf("systemd-analyze security: exposure %s", m[1])
}
