"""The ``purl`` command line: one module per subcommand, wired lazily in :mod:`purl.cli.main`."""
