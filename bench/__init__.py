"""`make bench`: the gateway's overhead measured against a direct fake upstream.

Processes: a fast fake OpenAI-compatible upstream (`bench.upstream`, several workers on one
port), the gateway started as a real `python -m moltbot gateway`, and load generators
(`bench.load`) in their own processes. `bench.runner` drives them; `bench.report` prints
medians, ratios and the targets of issue 6. Scenario (g) (`bench.memory`, issue 9) measures the
gateway's memory and `/healthz` under long and unread answers from its offline echo model.
"""
