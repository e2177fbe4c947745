"""TaskQL: a GraphQL API server for team task management."""
