"""para.mcp_server: para's tools for AI agents over the Model Context Protocol (`para-mcp`, `paractl mcp`).

An MCP server on the official SDK's low-level Server that talks to parad through
`AsyncClient`: every pool parad runs is an MCP tool with the JSON Schema of its
arguments, `bash` returns a task handle instead of blocking past a short wait,
and `task_output`, `task_cancel`, `task_list` and `batch` are MCP-only tools.

    catalog.py     the tool definitions: parad's schemas adapted for MCP, and the MCP-only tools
    arguments.py   a call's arguments checked against what was published, paths resolved
    tasks.py       the tasks this server started: output so far (bounded), results, handles
    results.py     a task's outcome as MCP content: readable text and structured content
    server.py      the SDK wiring: list_tools, call_tool, progress, cancellation
    transports.py  stdio and streamable HTTP (loopback only), and signals
    auth.py        HTTP's bearer token: where it comes from, and the middleware that asks for it
    main.py        the command line
"""
