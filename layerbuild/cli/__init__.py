"""The command line: one module per verb group; errors become exit codes in main."""
