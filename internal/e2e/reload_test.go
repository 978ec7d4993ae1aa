package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/kafkatest"
)

// TestSIGHUPReloadKeepsOldRulesOnError replaces the rule file with a broken
// one and sends SIGHUP: the old rules keep firing and the reload metric says
// 0. A good file then takes effect. kfake stands in for the broker here: the
// subject is the reload, and the real broker is covered by the test above.
func TestSIGHUPReloadKeepsOldRulesOnError(t *testing.T) {
	brokers := kafkatest.Fake(t, map[string]int32{"payments": 2, "ledger": 2})
	dir := t.TempDir()
	ruleFile := writeRules(t, dir, "")
	mon := launchMonitor(t, dir, "monitor", func(httpAddr string) string {
		return fmt.Sprintf(`kafka: {brokers: [%q], group: reload}
state_dir: %s
rule_files: [%q]
http: {listen: %q}
`, brokers, filepath.Join(dir, "state"), ruleFile, httpAddr)
	})
	httpAddr := mon.http
	produce := producerTo(t, brokers, "", "acct-7")
	capture := func(id string) { produce("payments", payment(id, time.Now())) }
	violationsOf := func(rule string) map[string]string {
		out := map[string]string{}
		for k, v := range mon.violationsFor(t, rule) {
			out[k] = v
		}
		return out
	}
	reloadMetric := func() string {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "invmon_rules_last_reload_successful ") {
				return strings.TrimPrefix(line, "invmon_rules_last_reload_successful ")
			}
		}
		return ""
	}
	hup := func() {
		if err := mon.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	capture("pay-1")
	waitFor(t, 30*time.Second, func() bool { return violationsOf(rule)["pay-1"] == "open" })

	good, err := os.ReadFile(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(good), `event.status == "captured"`, `event.status == `, 1)
	if err := os.WriteFile(ruleFile, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	hup()
	waitFor(t, 10*time.Second, func() bool { return reloadMetric() == "0" })
	if !strings.Contains(mon.logTail(), "rule reload failed") || !strings.Contains(mon.logTail(), "rules.yaml:") {
		t.Errorf("the log should name the broken file and position:\n%s", mon.logTail())
	}
	capture("pay-2") // the old rules still fire
	waitFor(t, 30*time.Second, func() bool { return violationsOf(rule)["pay-2"] == "open" })

	renamed := strings.Replace(string(good), "name: "+rule, "name: "+rule+"_v2", 1)
	if err := os.WriteFile(ruleFile, []byte(renamed), 0o644); err != nil {
		t.Fatal(err)
	}
	hup()
	waitFor(t, 10*time.Second, func() bool { return reloadMetric() == "1" })
	capture("pay-3")
	waitFor(t, 30*time.Second, func() bool { return violationsOf(rule + "_v2")["pay-3"] == "open" })
	if _, ok := violationsOf(rule)["pay-3"]; ok {
		t.Errorf("the replaced rule still judged pay-3")
	}
}
