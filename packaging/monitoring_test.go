package packaging

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// promtool returns the path of Prometheus' promtool, or skips the test without it (unless
// INFERD_REQUIRE_PROMETHEUS says it must be there).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("INFERD_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("INFERD_REQUIRE_PROMETHEUS is set but promtool is not installed (Debian package prometheus)")
		}
		t.Skip("promtool not found: install Debian's prometheus package to test the shipped rules (.ci/run does)")
	}
	return p
}

var alertName = regexp.MustCompile(`(?m)^\s+- alert: (\S+)$`)

// alerts lists the alert names of monitoring/alerts.yml.
func alerts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("monitoring/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range alertName.FindAllStringSubmatch(string(data), -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Fatal("no alerts in monitoring/alerts.yml")
	}
	return names
}

// The shipped rules are valid and pass their unit tests.
func TestMonitoringRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml", "recording.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = "monitoring"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

var (
	testAlert = regexp.MustCompile(`alertname: (\w+)`)
	quiet     = regexp.MustCompile(`alertname: (\w+), exp_alerts: \[\]`)
)

// Every alert has a unit test where it fires and one where it stays quiet, a runbook section
// with the anchor its annotation links, and the package installs every file.
func TestEveryAlertIsTestedAndDocumented(t *testing.T) {
	data, err := os.ReadFile("monitoring/rules_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	tests := string(data)
	fires := map[string]bool{}
	for _, block := range strings.Split(tests, "- eval_time:") {
		if m := testAlert.FindStringSubmatch(block); m != nil && strings.Contains(block, "exp_labels:") {
			fires[m[1]] = true
		}
	}
	silent := map[string]bool{}
	for _, m := range quiet.FindAllStringSubmatch(tests, -1) {
		silent[m[1]] = true
	}
	runbook, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := os.ReadFile("monitoring/alerts.yml")
	for _, a := range alerts(t) {
		if !fires[a] || !silent[a] {
			t.Errorf("alert %s: a test where it fires %v, one where it stays quiet %v", a, fires[a], silent[a])
		}
		if !strings.Contains(string(runbook), "\n## "+a+"\n") {
			t.Errorf("docs/runbook.md has no section ## %s", a)
		}
		if !strings.Contains(string(rules), `runbook: "runbook.md#`+strings.ToLower(a)+`"`) {
			t.Errorf("alert %s does not link runbook.md#%s", a, strings.ToLower(a))
		}
	}
	nfpm, err := os.ReadFile("../nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"alerts.yml", "recording.yml", "grafana-dashboard.json"} {
		if !strings.Contains(string(nfpm), "src: packaging/monitoring/"+f+"\n    dst: /usr/share/inferd/monitoring/"+f+"\n") {
			t.Errorf("nfpm.yaml does not install packaging/monitoring/%s under /usr/share/inferd/monitoring/", f)
		}
	}
	if !strings.Contains(string(nfpm), "src: docs/runbook.md\n") {
		t.Error("nfpm.yaml does not install docs/runbook.md")
	}
}

// DashboardQueries returns every query of the Grafana dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

var recorded = regexp.MustCompile(`(?m)^\s+- record: (\S+)$`)

// Every recorded series the dashboard and the alerts use is recorded by recording.yml, and
// every inferd metric they read is one the daemon exports (in the metrics golden file or the
// GPU collector's names).
func TestDashboardReadsWhatExists(t *testing.T) {
	rec, err := os.ReadFile("monitoring/recording.yml")
	if err != nil {
		t.Fatal(err)
	}
	var records []string
	for _, m := range recorded.FindAllStringSubmatch(string(rec), -1) {
		records = append(records, m[1])
	}
	golden, err := os.ReadFile("../metrics/testdata/exposition.golden")
	if err != nil {
		t.Fatal(err)
	}
	hardware, err := os.ReadFile("../metrics/hardware.go")
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := os.ReadFile("monitoring/alerts.yml")
	comment := regexp.MustCompile(`(?m)^\s*#.*$`)
	exprs := append(dashboardQueries(t), comment.ReplaceAllString(string(rules), ""), comment.ReplaceAllString(string(rec), ""))
	series := regexp.MustCompile(`[a-z_]+:[a-z0-9_]+:[a-z0-9_]+|inferd:[a-z_]+|inferd_[a-z_]+`)
	for _, e := range exprs {
		for _, name := range series.FindAllString(e, -1) {
			switch {
			case strings.Contains(name, ":"):
				if !slices.Contains(records, name) {
					t.Errorf("%s is read but not recorded by recording.yml", name)
				}
			case strings.HasPrefix(name, "inferd_gpu_"):
				if !strings.Contains(string(hardware), `"`+name+`"`) {
					t.Errorf("%s is not a metric of the GPU collector", name)
				}
			default:
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
				if !strings.Contains(string(golden), "# TYPE "+base+" ") {
					t.Errorf("%s is not in metrics/testdata/exposition.golden", name)
				}
			}
		}
	}
}
