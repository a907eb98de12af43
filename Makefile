# Shortcuts over ./dev; `make help` lists them.
.PHONY: help run test test-fast lint schemas broker-kafka

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

run: ## run the worker against the embedded broker (or KAFKA_BOOTSTRAP_SERVERS)
	./dev run

test: ## whole suite: Tansu, then Apache Kafka integration
	./dev test

test-fast: ## only the Tansu run
	./dev test --fast

lint: ## ruff, mypy, schema drift
	./dev lint

schemas: ## regenerate schemas/json
	./dev cli schemas export

broker-kafka: ## start Apache Kafka (KRaft) from Maven jars and print its address
	./dev cli broker --kind kafka --create-topics
