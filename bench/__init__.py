"""Load benchmark: fake upstream + gateway + load generator, all on loopback."""
