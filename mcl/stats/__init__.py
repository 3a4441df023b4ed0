"""Statistics of the decisions: seed intervals, TOST, Holm, power, and the pre-registered hypothesis table."""
