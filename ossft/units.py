"""Units of size, one home for each."""

GIB = 2**30
