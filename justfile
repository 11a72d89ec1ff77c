# sculpt's everyday commands. The two set-up commands are `just quickstart` and `just test`.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/sculpt-target")

# Run the quickstart campaign on the embedded digits data.
quickstart:
    cargo run --release -- run experiments/quickstart.toml

# Pass the tests (what .ci/run runs).
test:
    cargo test --release

# Formatting and lints, as required before each commit.
lint:
    cargo fmt --check
    cargo clippy --release --all-targets -- -D warnings

# Benchmarks.
bench:
    cargo bench --bench campaign
    cargo bench --bench mnist
    cargo bench --bench runtime
    cargo bench --bench gp_ask

# Everything a commit needs.
check: lint test
