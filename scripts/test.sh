#!/usr/bin/env bash
# The whole test suite: type-check, lint, format check, unit tests, integration tests.
# Run it with `npm test` (which puts the pinned Node 24 first on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }
step "node $(node --version)"
step typecheck
npx tsc --noEmit -p .
step lint
npx eslint --max-warnings 0 .
step format
npx prettier --check --log-level warn .
step "unit and integration tests"
# One run, so the runner prints one summary that counts every test.
node --test --test-concurrency=2 --test-timeout=600000 'src/**/*.test.ts' 'test/**/*.test.ts'
