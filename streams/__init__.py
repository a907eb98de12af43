"""The domain, free of Faust and Kafka clients: every rule here is a plain function."""
