// Package buildinfo says which build of invmon is running, the way every
// Prometheus exporter does: `monitor --version`, the invmon_build_info
// gauge, the console's footer and the replay report all read it from
// github.com/prometheus/common/version.
//
// Release builds set the version with
//
//	-ldflags "-X github.com/prometheus/common/version.Version=1.2.3"
//
// (the Dockerfile and `make build` do, from `git describe`); otherwise it is
// the module version Go recorded, or "devel". The revision comes from the
// ldflags too, or from the VCS stamp Go embeds in builds of a checkout.
package buildinfo

import (
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
)

// Program is the name the build reports itself under.
const Program = "invmon"

func init() {
	if version.Version != "" {
		return
	}
	version.Version = "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version.Version = bi.Main.Version
	}
}

// Version is the running build's version ("1.2.3", or "devel").
func Version() string { return version.Version }

// Revision is the VCS revision of the build, or "unknown".
func Revision() string { return version.GetRevision() }

// Short is one line for a page footer: "invmon devel (revision 1a2b3c4d5e6f, go1.26.8)".
func Short() string {
	rev := Revision()
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return Program + " " + Version() + " (revision " + rev + ", " + version.GoVersion + ")"
}

// Print is the text of `monitor --version`.
func Print() string { return version.Print(Program) }

// Collector exports invmon_build_info{version,revision,branch,goversion,goos,goarch,tags} = 1.
func Collector() prometheus.Collector { return versioncollector.NewCollector(Program) }
