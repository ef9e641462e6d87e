//go:build tools

// Keeps crictl's main package in the module graph so go.sum covers it.
package crictl

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
