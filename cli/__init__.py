"""The mrvae-cli command line."""
