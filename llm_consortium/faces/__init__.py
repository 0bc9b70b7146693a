"""How people reach the core: the `llm consortium` command, the consortium as an llm model, the terminal display and the web viewer."""
