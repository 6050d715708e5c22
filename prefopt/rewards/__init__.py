"""Rule rewards: verifiable checkers for tasks with a known answer."""
