//go:build tools

// The blank import keeps kwok's command in go.mod/go.sum; ../build.sh builds it.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
