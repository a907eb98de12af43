"""outage-sms: command line, broker launchers and operational tooling."""
