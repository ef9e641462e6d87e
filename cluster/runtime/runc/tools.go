//go:build tools

// Keeps runc's main package in the module graph so go.sum covers it.
package runc

import _ "github.com/opencontainers/runc"
