"""BIDS input (layout queries, selection, participants.tsv, validation) and BIDS-Derivatives output."""
