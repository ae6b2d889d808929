"""The gateway's core: the state machine, waiting for changes, dispatching and folding, the tool-call service.

Plain code against the `WorkflowStore` and `Bus` interfaces; nothing here knows MCP, HTTP, SQL or NATS.
Import from the modules: `states`, `changes`, `dispatch`, `folding`, `service`.
"""
