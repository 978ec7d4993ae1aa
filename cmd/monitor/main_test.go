package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestMain lets the test binary act as the monitor command inside scripts,
// so the scripts exercise the real flag parsing and exit codes.
func TestMain(m *testing.M) {
	// Tests that measure the command as a process of its own (time, memory)
	// run this binary with INVMON_TEST_MAIN=1.
	if os.Getenv("INVMON_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	testscript.Main(m, map[string]func(){"monitor": main})
}

// TestScripts runs the CLI scripts in testdata/script. $RULES is the
// repository's rules directory, so scripts test the shipped examples.
func TestScripts(t *testing.T) {
	rulesDir, err := filepath.Abs("../../rules")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rulesDir); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("RULES", rulesDir)
			// $KFAKE is an in-process Kafka cluster of this script alone.
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				return err
			}
			env.Defer(c.Close)
			env.Setenv("KFAKE", c.ListenAddrs()[0])
			return nil
		},
	})
}
