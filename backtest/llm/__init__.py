"""The LLM layer: client (openai SDK), cassette store, pricing, budgets, offline analyst and a
loopback test server. Every call a strategy makes goes through here, so every answer is
recorded, replayable offline, and priced from the tokens it used."""
