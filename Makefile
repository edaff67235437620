# The two commands: `make demo` (main walk-through) and `make test` (every test suite).
.PHONY: demo test setup bench clean-demo

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

bench:
	cargo bench -p biomedclip-core

clean-demo:
	-[ -f .api/pid ] && kill $$(cat .api/pid)
	rm -rf .api
	bash scripts/pg_cluster.sh stop .pgdata || true
	rm -rf .pgdata
