//go:build tools

// Keeps the two main packages in the module graph so go.sum covers them.
package gvisor

import (
	_ "gvisor.dev/gvisor/runsc"
	_ "gvisor.dev/gvisor/shim"
)
