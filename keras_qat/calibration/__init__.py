"""Initial clip bounds: gathering layer inputs and the IFMR search."""
