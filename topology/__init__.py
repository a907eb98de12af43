"""The Faust wiring: settings, the topic registry, tables and thin agents."""
