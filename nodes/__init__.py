"""The loop's nodes: functions of state returning partial updates. Side effects go through
`nodes.services.Services`, which tests replace with fakes."""
