"""Scripts that regenerate the paper's figures and tables from saved result files."""
