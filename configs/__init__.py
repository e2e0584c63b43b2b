"""The experiment configs shipped with PuRL (``*.yaml``), installed as package data ``purl.configs`` so that
``--config quick`` finds them from any working directory (:func:`purl.config.resolve_config_path`)."""
