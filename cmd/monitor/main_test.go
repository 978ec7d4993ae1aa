package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/invmon/invmon/internal/kafkatest"
	"github.com/invmon/invmon/internal/rules"
	"github.com/invmon/invmon/internal/schema"
	"github.com/invmon/invmon/internal/sim"
	examplerules "github.com/invmon/invmon/rules"
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

// TestSchemaScripts runs the CLI scripts in testdata/schema against a real
// Schema Registry ($SCHEMA_REGISTRY) holding the example Avro schemas of
// payments and ledger.
func TestSchemaScripts(t *testing.T) {
	reg := kafkatest.StartSchemaRegistry(t)
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schema.RegisterSchemas(context.Background(), cl, rules.FormatAvro, examplerules.Schemas(), "", sim.TopicPayments, sim.TopicLedger); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/schema",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("SCHEMA_REGISTRY", reg.URL())
			return nil
		},
	})
}
