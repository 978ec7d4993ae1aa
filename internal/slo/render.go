package slo

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Marshal renders f as a Prometheus rule file (`rule_files:`), after a
// comment header.
func Marshal(f *File, header string) ([]byte, error) {
	return marshal(f, header)
}

// PrometheusRule is the Kubernetes custom resource of the Prometheus
// Operator that carries rule groups.
type PrometheusRule struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       File     `yaml:"spec"`
}

// Metadata is the resource's name, namespace and labels (an operator's
// ruleSelector usually matches a label such as release: prometheus).
type Metadata struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace,omitempty"`
	Labels    map[string]string `yaml:"labels,omitempty"`
}

// MarshalPrometheusRule renders f as a monitoring.coreos.com/v1
// PrometheusRule.
func MarshalPrometheusRule(f *File, meta Metadata, header string) ([]byte, error) {
	if meta.Name == "" {
		return nil, fmt.Errorf("a PrometheusRule needs a name")
	}
	return marshal(PrometheusRule{APIVersion: "monitoring.coreos.com/v1", Kind: "PrometheusRule", Metadata: meta, Spec: *f}, header)
}

func marshal(v any, header string) ([]byte, error) {
	var b bytes.Buffer
	for _, line := range bytes.Split([]byte(header), []byte("\n")) {
		if len(line) > 0 {
			b.WriteString("# ")
			b.Write(line)
		}
		b.WriteString("\n")
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
