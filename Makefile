# The two commands (see README.md).
.PHONY: conformance test

# The conformance suites: against the current kubeconfig context if there is
# one, otherwise against the bundled local cluster (brought up and down).
conformance:
	@cluster/conformance.sh

# Everything: the harness's own tests, then the conformance suites, on the
# bundled local cluster (brought up and down, also on failure).
test:
	@cluster/test.sh
