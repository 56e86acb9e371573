"""para.sandbox: how one command is confined.

Limits (`limits`), the environment it sees (`environment`), capped output
(`output`), process-tree control (`prctl`, `tree`) and the non-blocking
`command.Command` that a worker's poll loop drives. Knows nothing of ZeroMQ.
"""
