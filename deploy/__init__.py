"""Deployment: local dev-loop scripts (deploy/local), Dockerfile and docker-compose.yml."""
