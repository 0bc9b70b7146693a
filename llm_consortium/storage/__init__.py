"""Runs and saved consortia in llm's logs.db: the recorder that writes a run as it goes, and the queries that read it back."""
