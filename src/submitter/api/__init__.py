"""The HTTP API: app factory, dependencies (auth, runtime), one module per resource in routes/."""
