"""tinymnist harness: data, recipes, one training engine, gates, results and the command line."""
