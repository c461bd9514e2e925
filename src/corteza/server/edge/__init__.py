"""The HTTP edge: routes, errors, security policy and limits, OpenAPI, static files."""
