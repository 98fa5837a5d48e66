"""sayiir-grpc: the Sayiir PostgreSQL persistence backend as a gRPC service."""

__version__ = "0.1.0"
