// Package examplerules embeds the example domain's rule files, so that the
// demo runs from any directory with nothing but the binary.
package examplerules

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed *.yaml
var files embed.FS

// Files returns the example rule files' names (sorted) and contents.
func Files() ([]string, map[string][]byte, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(names)
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, nil, err
		}
		out["rules/"+n] = b
	}
	for i, n := range names {
		names[i] = "rules/" + n
	}
	return names, out, nil
}

//go:embed schemas
var schemas embed.FS

// Schemas returns the example domain's schemas, one per topic: TOPIC.avsc
// (Avro) and TOPIC.proto (Protobuf), for `monitor simulate --format`.
func Schemas() fs.FS {
	sub, err := fs.Sub(schemas, "schemas")
	if err != nil {
		panic(err) // the directory is embedded above
	}
	return sub
}
