"""The consortium itself: a run's rounds, members, judging methods, prompts, parsing and stopping rules. Imports nothing from the other folders."""
