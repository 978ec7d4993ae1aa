package deploycheck

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/invmon/invmon/internal/config"
	"github.com/invmon/invmon/internal/rules"
)

var update = flag.Bool("update", false, "rewrite the generated manifests from their sources")

const k8sDir = "../../deploy/kubernetes"

// manifests are every object of deploy/kubernetes, decoded strictly by kind.
type manifests struct {
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
	secrets      []*corev1.Secret
	pdbs         []*policyv1.PodDisruptionBudget
	monitors     []*monv1.ServiceMonitor
	promRules    []*monv1.PrometheusRule
	files        []string
}

// splitDocuments splits a multi-document YAML file on "---" lines.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// decode reads every manifest; an unknown field, a wrong type or an
// unknown kind fails the test with the file and document.
func decode(t *testing.T) manifests {
	t.Helper()
	var m manifests
	paths, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	for _, p := range paths {
		name := filepath.Base(p)
		if name == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocuments(b) {
			var head unstructured.Unstructured
			if err := yaml.Unmarshal(doc, &head.Object); err != nil {
				t.Fatalf("%s document %d: %v", name, i, err)
			}
			into := func(v any) any {
				if err := yaml.UnmarshalStrict(doc, v); err != nil {
					t.Errorf("%s document %d (%s %s): %v", name, i, head.GetKind(), head.GetName(), err)
				}
				return v
			}
			switch gvk := head.GetAPIVersion() + "/" + head.GetKind(); gvk {
			case "apps/v1/StatefulSet":
				m.statefulSets = append(m.statefulSets, into(&appsv1.StatefulSet{}).(*appsv1.StatefulSet))
			case "v1/Service":
				m.services = append(m.services, into(&corev1.Service{}).(*corev1.Service))
			case "v1/ConfigMap":
				m.configMaps = append(m.configMaps, into(&corev1.ConfigMap{}).(*corev1.ConfigMap))
			case "v1/Secret":
				m.secrets = append(m.secrets, into(&corev1.Secret{}).(*corev1.Secret))
			case "policy/v1/PodDisruptionBudget":
				m.pdbs = append(m.pdbs, into(&policyv1.PodDisruptionBudget{}).(*policyv1.PodDisruptionBudget))
			case "monitoring.coreos.com/v1/ServiceMonitor":
				m.monitors = append(m.monitors, into(&monv1.ServiceMonitor{}).(*monv1.ServiceMonitor))
			case "monitoring.coreos.com/v1/PrometheusRule":
				m.promRules = append(m.promRules, into(&monv1.PrometheusRule{}).(*monv1.PrometheusRule))
			default:
				t.Errorf("%s document %d: unexpected kind %q", name, i, gvk)
			}
		}
	}
	return m
}

// TestKubernetesManifests decodes every manifest strictly into its API type
// and checks that the pieces fit: the StatefulSet's static membership, state
// volume, probes and grace period; the ConfigMaps and Secret it mounts; the
// Services, PDB and ServiceMonitor selecting its pods; the kustomization
// listing every file.
func TestKubernetesManifests(t *testing.T) {
	m := decode(t)
	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(m.statefulSets))
	}
	ss := m.statefulSets[0]
	pod := ss.Spec.Template
	if !selects(ss.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("StatefulSet selector %v does not select its pods %v", ss.Spec.Selector.MatchLabels, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// Static membership: the instance id is the pod's name.
	if !slices.Contains(c.Args, "--kafka.instance-id=$(POD_NAME)") {
		t.Errorf("args %v: want --kafka.instance-id=$(POD_NAME)", c.Args)
	}
	podName := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	})
	if podName < 0 {
		t.Error("POD_NAME is not the pod's metadata.name")
	}
	// Readiness on /readyz, on the container's http port.
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "http" {
		t.Errorf("readiness probe %+v: want GET /readyz on port http", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe %+v: want GET /healthz", p)
	}
	// Termination grace longer than a batch's commit: the SIGTERM path
	// finishes the batch, syncs Badger and commits offsets.
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Errorf("terminationGracePeriodSeconds %v: want at least 30 s for the batch in hand to commit", g)
	}

	// The config: mounted where the args say, strict, its state_dir on the PVC.
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for name := range mounts {
		_, isVolume := volumes[name]
		isClaim := slices.ContainsFunc(ss.Spec.VolumeClaimTemplates, func(pvc corev1.PersistentVolumeClaim) bool { return pvc.Name == name })
		if !isVolume && !isClaim {
			t.Errorf("volume mount %s has no volume or claim", name)
		}
	}
	configMap := func(name string) *corev1.ConfigMap {
		for _, cm := range m.configMaps {
			if cm.Name == name {
				return cm
			}
		}
		t.Fatalf("no ConfigMap %s", name)
		return nil
	}
	cfgVol := volumes[mounts["config"].Name]
	if cfgVol.ConfigMap == nil {
		t.Fatal("the config mount is not a ConfigMap")
	}
	monitorYAML := configMap(cfgVol.ConfigMap.Name).Data["monitor.yaml"]
	cfgPath := filepath.Join(t.TempDir(), "monitor.yaml")
	if err := os.WriteFile(cfgPath, []byte(monitorYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("the ConfigMap's monitor.yaml does not load: %v", err)
	}
	if !slices.Contains(c.Args, "--config="+mounts["config"].MountPath) {
		t.Errorf("args %v do not read the mounted config %s", c.Args, mounts["config"].MountPath)
	}
	if mounts["state"].MountPath != cfg.StateDir {
		t.Errorf("state volume at %s, state_dir %s", mounts["state"].MountPath, cfg.StateDir)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 || ss.Spec.VolumeClaimTemplates[0].Name != "state" {
		t.Errorf("want one volume claim template named state")
	}
	// Every file the config names lies under a mounted Secret.
	secretDir := mounts["secrets"].MountPath
	secret := m.secrets[0]
	for _, f := range []string{cfg.Kafka.SASL.PasswordFile, cfg.Kafka.TLS.Config.CAFile, cfg.HTTP.WebConfigFile} {
		if f == "" {
			continue
		}
		if filepath.Dir(f) != secretDir {
			t.Errorf("config reads %s outside the mounted secret %s", f, secretDir)
		} else if _, ok := secret.StringData[filepath.Base(f)]; !ok {
			t.Errorf("config reads %s; the Secret has no key %s", f, filepath.Base(f))
		}
	}
	if volumes["secrets"].Secret == nil || volumes["secrets"].Secret.SecretName != secret.Name {
		t.Errorf("the secrets volume does not mount Secret %s", secret.Name)
	}
	// The rules: mounted where rule_files looks, and the shipped rules.
	rulesVol := volumes[mounts["rules"].Name]
	if rulesVol.ConfigMap == nil {
		t.Fatal("the rules mount is not a ConfigMap")
	}
	if len(cfg.RuleFiles) != 1 || filepath.Dir(cfg.RuleFiles[0]) != mounts["rules"].MountPath {
		t.Errorf("rule_files %v do not read the mounted rules at %s", cfg.RuleFiles, mounts["rules"].MountPath)
	}
	rulesCM := configMap(rulesVol.ConfigMap.Name)
	rulesDir := t.TempDir()
	for name, src := range rulesCM.Data {
		if err := os.WriteFile(filepath.Join(rulesDir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rules.LoadFiles(filepath.Join(rulesDir, "*.yaml")); err != nil {
		t.Errorf("the rules ConfigMap does not load: %v", err)
	}

	// Services, PDB and ServiceMonitor select the pods; the monitor scrapes
	// one service, on a port it has.
	for _, s := range m.services {
		if !selects(s.Spec.Selector, pod.Labels) {
			t.Errorf("Service %s does not select the pods", s.Name)
		}
	}
	if ss.Spec.ServiceName == "" || !slices.ContainsFunc(m.services, func(s *corev1.Service) bool {
		return s.Name == ss.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone
	}) {
		t.Errorf("serviceName %q is not a headless Service of the manifests", ss.Spec.ServiceName)
	}
	if len(m.pdbs) != 1 || !selects(m.pdbs[0].Spec.Selector.MatchLabels, pod.Labels) || m.pdbs[0].Spec.MaxUnavailable == nil {
		t.Error("want one PodDisruptionBudget with maxUnavailable selecting the pods")
	}
	if len(m.monitors) != 1 {
		t.Fatalf("%d ServiceMonitors", len(m.monitors))
	}
	scraped := 0
	for _, s := range m.services {
		if selects(m.monitors[0].Spec.Selector.MatchLabels, s.Labels) {
			scraped++
			for _, ep := range m.monitors[0].Spec.Endpoints {
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor port %s is not a port of Service %s", ep.Port, s.Name)
				}
			}
		}
	}
	if scraped != 1 {
		t.Errorf("the ServiceMonitor selects %d services, want exactly 1 (each pod scraped once)", scraped)
	}
	for _, ep := range m.monitors[0].Spec.Endpoints {
		if ba := ep.BasicAuth; ba != nil {
			for _, key := range []string{ba.Username.Key, ba.Password.Key} {
				if _, ok := secret.StringData[key]; !ok {
					t.Errorf("ServiceMonitor reads secret key %s that the Secret does not have", key)
				}
			}
		}
	}

	// The kustomization lists every manifest.
	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Namespace  string   `json:"namespace"`
		Resources  []string `json:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	sort.Strings(kust.Resources)
	sort.Strings(m.files)
	if strings.Join(kust.Resources, ",") != strings.Join(m.files, ",") {
		t.Errorf("kustomization resources %v, manifests %v", kust.Resources, m.files)
	}
}

// selects reports whether a selector's labels are all in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestGeneratedManifests keeps rules-configmap.yaml equal to rules/*.yaml and
// prometheusrule.yaml equal to deploy/prometheus's rule files; -update
// rewrites them.
func TestGeneratedManifests(t *testing.T) {
	for _, g := range []struct {
		file string
		gen  func(t *testing.T) []byte
	}{{"rules-configmap.yaml", rulesConfigMap}, {"prometheusrule.yaml", prometheusRules}} {
		want := g.gen(t)
		path := filepath.Join(k8sDir, g.file)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what its sources generate; run go test ./internal/deploycheck -run Generated -update", path)
		}
	}
}

const generatedHeader = "# Generated by `go test ./internal/deploycheck -run Generated -update` from %s. Do not edit.\n"

func rulesConfigMap(t *testing.T) []byte {
	paths, err := filepath.Glob("../../rules/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("rules: %v", err)
	}
	cm := corev1.ConfigMap{Data: map[string]string{}}
	cm.APIVersion, cm.Kind = "v1", "ConfigMap"
	cm.Name = "invmon-rules"
	cm.Labels = map[string]string{"app.kubernetes.io/name": "invmon"}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[filepath.Base(p)] = string(b)
	}
	return marshal(t, "rules/*.yaml", &cm)
}

func prometheusRules(t *testing.T) []byte {
	var out []byte
	for i, src := range []struct{ file, name string }{
		{"rules.yml", "invmon"},
		{"slo.rules.yml", "invmon-slo"},
	} {
		b, err := os.ReadFile(filepath.Join("../../deploy/prometheus", src.file))
		if err != nil {
			t.Fatal(err)
		}
		pr := monv1.PrometheusRule{}
		pr.APIVersion, pr.Kind = "monitoring.coreos.com/v1", "PrometheusRule"
		pr.Name = src.name
		pr.Labels = map[string]string{"app.kubernetes.io/name": "invmon"}
		// rules.yml's groups have PrometheusRuleSpec's shape exactly.
		if err := yaml.UnmarshalStrict(b, &pr.Spec); err != nil {
			t.Fatalf("deploy/prometheus/%s as a PrometheusRuleSpec: %v", src.file, err)
		}
		doc := marshal(t, "deploy/prometheus/"+src.file, &pr)
		if i > 0 {
			out = append(out, "---\n"...)
		}
		out = append(out, doc...)
	}
	return out
}

func marshal(t *testing.T, source string, v any) []byte {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	// Drop the zero fields the API types always emit.
	b = bytes.ReplaceAll(b, []byte("  creationTimestamp: null\n"), nil)
	return append([]byte(fmt.Sprintf(generatedHeader, source)), b...)
}
