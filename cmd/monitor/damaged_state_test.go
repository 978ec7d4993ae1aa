package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/invmon/invmon/internal/engine"
	"github.com/invmon/invmon/internal/joinstate"
	"github.com/invmon/invmon/internal/violation"
)

// TestRunRefusesDamagedState: `monitor run` on a state directory whose table
// was overwritten in part exits non-zero, naming the damaged file and the
// recovery step, before it connects to anything; it never starts with part
// of the state.
func TestRunRefusesDamagedState(t *testing.T) {
	dir := t.TempDir()
	s, err := joinstate.Open(dir, joinstate.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]engine.Op{}
	for i := range 2000 {
		v := violation.Violation{ID: fmt.Sprintf("v%04d", i), Rule: "r", State: violation.Open, DetectedAt: time.Unix(int64(i), 0).UTC()}
		b, _ := json.Marshal(v)
		ops["v/"+v.ID] = engine.Op{Value: b}
	}
	if err := s.Commit(joinstate.PartitionDelta{Partition: 0, Delta: &engine.Delta{Ops: ops}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) != 1 {
		t.Fatalf("tables %v, want one", tables)
	}
	f, err := os.OpenFile(tables[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 512), st.Size()/3); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rulesGlob, _ := filepath.Abs("../../rules/*.yaml")
	cmd := exec.Command(os.Args[0], "run", "--kafka.brokers", "127.0.0.1:1", "--state-dir", dir, "--rule-files", rulesGlob, "--http.listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "INVMON_TEST_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("monitor run kept running on a damaged state directory; stderr:\n%s", stderr.String())
	}
	if err == nil {
		t.Fatalf("monitor run exited 0 on a damaged state directory")
	}
	out := stderr.String()
	for _, want := range []string{filepath.Base(tables[0]), "is damaged", "move the state directory aside", "changelog"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr does not say %q:\n%s", want, out)
		}
	}
}
