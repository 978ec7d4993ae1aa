package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestEverySettingHasAFlagOrAReason keeps the file and the command line
// from drifting apart: a new setting needs a flag in Flags or a reason in
// FileOnly, and neither may name a setting that does not exist.
func TestEverySettingHasAFlagOrAReason(t *testing.T) {
	all := settings(reflect.TypeOf(Config{}), "")
	bound := map[string]string{}
	names := map[string]bool{}
	for _, f := range Flags {
		if names[f.Name] {
			t.Errorf("flag %s declared twice", f.Name)
		}
		names[f.Name] = true
		if prev, dup := bound[f.Path]; dup {
			t.Errorf("%s is bound to both %s and %s", f.Path, prev, f.Name)
		}
		bound[f.Path] = f.Name
		if !slices.Contains(all, f.Path) {
			t.Errorf("flag %s names %s, which is not a setting", f.Name, f.Path)
		}
		if f.Usage == "" {
			t.Errorf("flag %s has no usage", f.Name)
		}
	}
	for path := range FileOnly {
		if !slices.Contains(all, path) {
			t.Errorf("FileOnly names %s, which is not a setting", path)
		}
		if _, ok := bound[path]; ok {
			t.Errorf("%s has a flag and is listed as file-only", path)
		}
	}
	for _, path := range all {
		if _, ok := bound[path]; !ok && FileOnly[path] == "" {
			t.Errorf("setting %s has no flag: add one to Flags, or say in FileOnly why not", path)
		}
	}
	// Registering panics on a path that names no field or a type without
	// a flag type.
	BindFlags(pflag.NewFlagSet("run", pflag.ContinueOnError), new(Config))
}

// TestFlagsWinOverTheFile: given flags replace the file's values, flags
// not given leave them, and a flag's default is Defaults' value.
func TestFlagsWinOverTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "monitor.yaml")
	if err := os.WriteFile(path, []byte(`kafka: {brokers: [file:9092], group: from-file, changelog: true}
rule_files: [a.yaml]
http: {listen: ":9000", read_timeout: 5s}
privacy: {identifiers: redact}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	fileCfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	flagCfg := Defaults()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	BindFlags(fs, &flagCfg)
	if f := fs.Lookup("alertmanager.resend-interval"); f == nil || f.DefValue != "1m0s" {
		t.Fatalf("resend-interval flag %+v, want the default 1m0s", f)
	}
	err = fs.Parse([]string{"--kafka.brokers=a:1,b:2", "--kafka.changelog=false", "--http.read-timeout=1m",
		"--privacy.identifiers=hmac", "--privacy.impact-bands=100,1000", "--event-time.max=2100-01-01T00:00:00Z",
		"--web.config.file=web.yml", "--http.max-header-bytes=1024"})
	if err != nil {
		t.Fatal(err)
	}
	ApplyFlags(fs, &fileCfg, &flagCfg)
	got := fileCfg
	if strings.Join(got.Kafka.Brokers, ",") != "a:1,b:2" || got.Kafka.Changelog || got.Kafka.Group != "from-file" ||
		got.HTTP.ReadTimeout != time.Minute || got.HTTP.Listen != ":9000" || got.Privacy.Identifiers != "hmac" ||
		len(got.Privacy.ImpactBands) != 2 || got.EventTime.Max.Year() != 2100 || got.HTTP.WebConfigFile != "web.yml" ||
		got.HTTP.MaxHeaderBytes != 1024 || got.RuleFiles[0] != "a.yaml" {
		t.Fatalf("after flags: %+v", got)
	}
}

func TestSettingsListsLeaves(t *testing.T) {
	all := settings(reflect.TypeOf(Config{}), "")
	for _, want := range []string{"kafka.tls.ca_file", "kafka.sasl.oauth.token_url", "alertmanager.<http_client_config>", "event_time.min", "privacy.impact_bands", "state_dir"} {
		if !slices.Contains(all, want) {
			t.Errorf("settings lack %s: %v", want, all)
		}
	}
}
