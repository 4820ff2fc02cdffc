"""Generation: backends, the frontier loop, and resumable shards."""
