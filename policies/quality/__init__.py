"""How good the answers are for what they cost: shadow comparison of tiers, depth
advice (measurement, counters and their stores)."""
