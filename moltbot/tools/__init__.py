"""The agent's own tools: files in its workspace, commands, web pages, its sessions.

`base` has the tool protocol (what a tool declares and returns), `policy` which tools an agent
may use, `toolbox` the set of tools a runtime offers; one module per tool family (`fs`,
`exec`, `web`, `sessions`), `approvals` for commands that need an operator's yes, `sandbox`
for running commands under bubblewrap. The runtime's tool loop is moltbot.agents.tool_loop.

Nothing is imported here: the config validation reads `policy` without pulling in the rest.
"""
