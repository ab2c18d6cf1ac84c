"""circlet: a self-hosted CI server that runs .circleci/config.yml and speaks CircleCI API v1.1."""

__version__ = "0.1.0"
