"""Analysis: read an experiment directory offline and turn it into report tables."""
