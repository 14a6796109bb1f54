"""An example tinymnist plugin: one model builder and one recipe, registered through entry points."""
