package buildinfo

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBuildInfoGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "invmon_build_info" {
		t.Fatalf("gathered %v, want invmon_build_info", mfs)
	}
	labels := map[string]string{}
	for _, l := range mfs[0].GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	for _, name := range []string{"version", "revision", "goversion"} {
		if labels[name] == "" {
			t.Errorf("label %s is empty: %v", name, labels)
		}
	}
	if labels["version"] != Version() {
		t.Errorf("version label %q, Version() %q", labels["version"], Version())
	}
	if n := testutil.CollectAndCount(Collector()); n != 1 {
		t.Errorf("%d series, want 1", n)
	}
	if !strings.Contains(Short(), Version()) || !strings.HasPrefix(Print(), "invmon, version "+Version()) {
		t.Errorf("Short %q, Print %q", Short(), Print())
	}
}
