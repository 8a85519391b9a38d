"""Reading the files an operator writes (YAML configs, PIN files), with errors that never quote them."""
