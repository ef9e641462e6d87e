//go:build ignore

// Runs cluster/gvisor-hints.yaml's MutatingAdmissionPolicy through the API
// server's own code (k8s.io/apiserver of Kubernetes 1.37: its CEL compiler,
// match conditions and JSON Patch mutator), without an API server: every pod
// of the cases file (JSON: name -> pod) is matched and mutated as a CREATE
// would be, and its annotations afterwards printed (JSON: name -> annotations,
// or "error: ..."). Run by check.sh.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	v1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating"
	"k8s.io/apiserver/pkg/admission/plugin/policy/mutating/patch"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"sigs.k8s.io/yaml"
)

type allow struct{}

func (allow) Authorize(context.Context, authorizer.Attributes) (authorizer.Decision, string, error) {
	return authorizer.DecisionAllow, "", nil
}

func main() {
	manifest, err := os.ReadFile(os.Args[1])
	must(err)
	var policy v1.MutatingAdmissionPolicy
	must(yaml.UnmarshalStrict([]byte(strings.Split(string(manifest), "\n---\n")[0]), &policy))
	cases, err := os.ReadFile(os.Args[2])
	must(err)
	pods := map[string]*corev1.Pod{}
	must(json.Unmarshal(cases, &pods))

	evaluator := mutating.PodshareCompile(&policy)
	must(evaluator.Error)
	scheme := runtime.NewScheme()
	must(corev1.AddToScheme(scheme))
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	out := map[string]any{}
	for name, pod := range pods {
		ctx := evaluator.CompositedCompiler.CreateContext(context.Background())
		pod.SetGroupVersionKind(gvk)
		attrs := &admission.VersionedAttributes{
			Attributes: admission.NewAttributesRecord(pod, nil, gvk, pod.Namespace, pod.Name, gvr, "",
				admission.Create, &metav1.CreateOptions{}, false, nil),
			VersionedKind: gvk, VersionedObject: admission.NewLazyObject(pod),
		}
		matched := evaluator.Matcher.Match(ctx, attrs, nil, allow{})
		if matched.Error != nil {
			out[name] = "error: " + matched.Error.Error()
			continue
		}
		var obj runtime.Object = pod
		for _, p := range evaluator.Mutators {
			if !matched.Matches {
				break
			}
			obj, err = p.Patch(ctx, patch.Request{
				MatchedResource: gvr, VersionedAttributes: attrs,
				ObjectInterfaces:  admission.NewObjectInterfacesFromScheme(scheme),
				OptionalVariables: cel.OptionalVariableBindings{Authorizer: allow{}},
			}, celconfig.RuntimeCELCostBudget)
			if err != nil {
				break
			}
		}
		if err != nil {
			out[name] = "error: " + err.Error()
			err = nil
			continue
		}
		out[name] = map[string]any{"matched": matched.Matches, "annotations": obj.(*corev1.Pod).Annotations}
	}
	text, err := json.MarshalIndent(out, "", " ")
	must(err)
	fmt.Println(string(text))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "gvisor-hints-check:", err)
		os.Exit(1)
	}
}
