"""Settings: declared as data, loaded from defaults, a YAML file and the environment, validated."""
