"""The YAML files of configs/, installed as ``ettin_ft.configs`` (see pyproject.toml)."""
